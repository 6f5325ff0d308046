"""The installer keeps a working stack; the demo reports on it."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Only catches a hang: many times what these commands take on a busy
#: machine. No test here depends on how fast the machine is.
HANG_TIMEOUT = 1800


def test_installer_dry_run_keeps_working_stack():
    out = subprocess.run(
        [sys.executable, str(ROOT / 'tools' / 'install.py'), '--dry-run'],
        capture_output=True, text=True, timeout=HANG_TIMEOUT)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert 'torchvision' in text and ': kept' in text
    assert 'with ops loads: kept' in text
    assert 'building mmcv' not in text
    assert 'installing torch' not in text
    assert '-e ' in text and '[all]' in text
    # The summary says it was a plan, not a record.
    assert 'What was done' not in text
    assert 'nothing was installed or changed' in text
    summary = text.split('What a real run would do:', 1)[1]
    assert 'installing mmengine' in summary


def test_demo_reports_environment():
    """The demo's environment report alone (``--report-only``): the
    training itself is run by the README's first command, and the tools it
    calls are tested end to end in tests/test_e2e."""
    out = subprocess.run(
        [sys.executable, str(ROOT / 'tools' / 'demo.py'), '--report-only'],
        capture_output=True, text=True, timeout=HANG_TIMEOUT)
    assert out.returncode == 0, out.stderr
    assert 'mmcv ops load: yes' in out.stdout
    assert 'FcaFormer: fcaformer_mm, mmpretrain, mmseg, mmdet' in out.stdout
    assert ('checkpoint loaders read with weights_only=True: local paths, '
            in out.stdout)
    assert 'Synthetic ADE20K' not in out.stdout  # no training ran


def test_ruff_clean():
    out = subprocess.run([sys.executable, '-m', 'ruff', 'check', str(ROOT)],
                         capture_output=True, text=True, timeout=HANG_TIMEOUT)
    assert out.returncode == 0, out.stdout + out.stderr
