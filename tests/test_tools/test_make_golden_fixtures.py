"""Tests of tools/misc/make_golden_fixtures.py as a command line.

The script runs the official code, which is not available here, so its
cases are checked against the committed fixture
(``tests/test_analysis/test_golden.py``); these tests cover what it does
before and after: its arguments, refusing what is
not an official checkout, and never replacing a file without --force.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
TOOL = ROOT / 'tools' / 'misc' / 'make_golden_fixtures.py'
FIXTURE = ROOT / 'tests' / 'data' / 'fcaformer_golden.pth'
EXPECTED_FILE = 'semantic-segmentation/backbone/fcaformer.py'


def run_tool(*argv: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        p for p in (str(ROOT), env.get('PYTHONPATH')) if p)
    return subprocess.run([sys.executable, str(TOOL), *argv],
                          capture_output=True, text=True, env=env,
                          timeout=600, check=False)


def test_help():
    proc = run_tool('--help')
    assert proc.returncode == 0, proc.stderr
    assert 'OFFICIAL_CHECKOUT' in proc.stdout
    assert '--force' in proc.stdout and '--out' in proc.stdout


def test_not_an_official_checkout(tmp_path):
    out = tmp_path / 'golden.pth'
    proc = run_tool(str(tmp_path), '--out', str(out))
    assert proc.returncode == 1
    assert EXPECTED_FILE in proc.stderr
    assert 'hkzhang-git/FcaFormer' in proc.stderr
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_overwrite(tmp_path):
    out = tmp_path / 'golden.pth'
    out.write_bytes(b'made by the user')
    proc = run_tool(str(tmp_path), '--out', str(out))
    assert proc.returncode == 1
    assert 'exists' in proc.stderr and '--force' in proc.stderr
    assert out.read_bytes() == b'made by the user'
    # With --force, a failed run leaves the file as it was.
    proc = run_tool(str(tmp_path / 'nowhere'), '--out', str(out), '--force')
    assert proc.returncode == 1
    assert EXPECTED_FILE in proc.stderr
    assert out.read_bytes() == b'made by the user'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['golden.pth']


def test_default_out_is_the_committed_fixture():
    before = FIXTURE.read_bytes()
    proc = run_tool(str(ROOT))
    assert proc.returncode == 1
    assert str(FIXTURE) in proc.stderr and '--force' in proc.stderr
    assert FIXTURE.read_bytes() == before
