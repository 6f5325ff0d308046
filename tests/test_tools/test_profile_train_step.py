"""Tests of tools/analysis_tools/profile_train_step.py, run as a process.

Small images; nothing here asserts on timings.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
TOOL = ROOT / 'tools' / 'analysis_tools' / 'profile_train_step.py'


def run_tool(*argv: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, str(TOOL), *argv, '--size', '64', '64', '--batch',
         '2', '--threads', '1'], capture_output=True, text=True, env=env,
        cwd=ROOT, timeout=1800, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_grads_against_plain_training_and_the_reference():
    out = run_tool('grads', '--with-cp', 'both')
    rows = re.findall(
        r'with_cp=(\w+) against (plain training|reference path): outputs max '
        r'abs diff (\S+) .*gradients max abs diff (\S+) \(.*largest '
        r'gradient (\S+)\); (\d+) gradients', out)
    assert sorted((r[0], r[1]) for r in rows) == [
        ('False', 'plain training'), ('False', 'reference path'),
        ('True', 'plain training'), ('True', 'reference path')]
    for _, _, out_diff, grad_diff, largest, count in rows:
        assert float(out_diff) <= 1e-5 and float(grad_diff) <= 1e-5
        # The loss gives gradients that are not all vanishing.
        assert float(largest) > 1e-4
        assert int(count) > 250


def test_saved_activations_with_and_without_kernels():
    out = run_tool('saved', 'fcaformer@fast_training=false', 'fcaformer',
                   'convnext-t', '--top', '12')
    totals = dict(re.findall(
        r'## (\S+) with_cp=False\nsaved for backward: (\S+) MiB', out))
    assert list(totals) == ['fcaformer@fast_training=false', 'fcaformer',
                            'convnext-t']
    # The kernels keep less; their autograd nodes own what they keep.
    assert float(totals['fcaformer']) < 0.8 * float(
        totals['fcaformer@fast_training=false'])
    plain, fast = out.split('## fcaformer with_cp')
    for node in ('_NormsMlpBackward', '_WindowAttentionBackward'):
        assert node in fast and node not in plain


def test_operator_profile():
    out = run_tool('ops', 'fcaformer', '--top', '5')
    assert re.search(r'CPU allocator peak during forward\+backward: \d+ MiB',
                     out)
    assert 'top operators by self CPU time' in out
    assert 'top operators by memory allocated' in out
