"""The thin tools over fcaformer_mm.analysis run on their own, as
processes (their library is tested in tests/test_analysis)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
TOOLS = ROOT / 'tools'


def run(tool: str, *argv: str, cwd: Path = ROOT
        ) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        p for p in (str(ROOT), env.get('PYTHONPATH')) if p)
    return subprocess.run([sys.executable, str(TOOLS / tool), *argv],
                          capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=900, check=False)


@pytest.mark.parametrize('tool, words', [
    ('analysis_tools/benchmark.py', ['--table', '--metrics', 'train-memory']),
    ('analysis_tools/get_flops.py', ['--shape', '--full-counter']),
    ('analysis_tools/profile_train_step.py', ['saved', 'ops', '--with-cp']),
    ('analysis_tools/profile_inference.py', ['--repeats', '--top']),
    ('misc/compare_official.py', ['OFFICIAL_CHECKOUT', '--tolerance']),
])
def test_help(tool, words):
    proc = run(tool, '--help')
    assert proc.returncode == 0, proc.stderr[-3000:]
    for word in words:
        assert word in proc.stdout
    assert 'onednn' not in proc.stdout


def test_get_flops_command_line(tmp_path):
    """The script runs on its own, importing the package via the config's
    custom_imports."""
    pytest.importorskip('mmpretrain')
    out = tmp_path / 'result.json'
    proc = run('analysis_tools/get_flops.py',
               str(ROOT / 'configs' / 'fcaformer_l1_in1k.py'), '--shape',
               '32', '32', '--full-counter', 'torch', '--json', str(out),
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'FlopCounterMode' in proc.stdout
    result = json.loads(out.read_text())
    assert result['full_macs'] > result['nn_macs'] > 0
    # torch's counter has no formula of its own for the CPU attention kernel.
    assert result['matmul_macs'] > 0


def test_benchmark_argument_error_names_the_fix():
    proc = run('analysis_tools/benchmark.py', '--models', 'official')
    assert proc.returncode == 2
    assert 'the official model needs --official-path' in proc.stderr


def test_compare_official_without_a_checkout(tmp_path):
    proc = run('misc/compare_official.py', str(tmp_path))
    assert proc.returncode == 1
    assert 'semantic-segmentation/backbone/fcaformer.py' in proc.stderr
    assert 'git clone https://github.com/hkzhang-git/FcaFormer' in proc.stderr
