"""fcaformer_mm.analysis.profile (``profile_inference.py`` and
``profile_train_step.py``) on tiny inputs.

Nothing here asserts on timings, only on how the reports are made.
"""
from __future__ import annotations

import json
import re

import pytest
import torch

from fcaformer_mm.analysis import profile


@pytest.fixture(autouse=True)
def threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_profile_of_l1(tmp_path, capsys):
    out = tmp_path / 'profile.json'
    assert profile.main_inference([
        'fcaformer-l1', '--size', '32', '32', '--threads', '1', '--warmup',
        '0', '--repeats', '1', '--top', '5', '--json', str(out)]) == 0
    [p] = json.loads(out.read_text())
    assert p['model'] == 'fcaformer-l1' and p['threads'] == 1
    assert p['wall_ms'] > 0 and p['op_self_ms'] > 0
    assert p['profiled_wall_ms'] > 0
    assert p['python_overhead_ms'] == pytest.approx(p['profiled_wall_ms'] -
                                                    p['op_self_ms'])
    assert p['python_overhead_share'] == pytest.approx(
        p['python_overhead_ms'] / p['profiled_wall_ms'])
    # Operators run inside the profiled calls: their self time fits in.
    assert p['op_self_ms'] <= p['profiled_wall_ms']
    assert p['op_calls'] > 100  # 14 blocks of several operators each
    ops = p['top_ops']
    assert 0 < len(ops) <= 5
    assert [o['self_ms'] for o in ops] == sorted(
        (o['self_ms'] for o in ops), reverse=True)
    assert sum(o['share'] for o in ops) <= 1 + 1e-6
    tensors = p['largest_tensors']
    assert len(tensors) == 5
    assert [t['mib'] for t in tensors] == sorted(
        (t['mib'] for t in tensors), reverse=True)
    assert p['produced_mib'] >= sum(t['mib'] for t in tensors)
    assert 'fcaformer-l1 at 32x32' in capsys.readouterr().out


def test_unknown_model(capsys):
    with pytest.raises(SystemExit):
        profile.parse_inference_args(['fcaformer-l9'])
    assert "unknown model(s) ['fcaformer-l9']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        profile.parse_train_step_args(['saved', 'swin-t'])
    with pytest.raises(ValueError, match="Unknown model 'swin-t'"):
        profile.build_training('swin-t')


def run_train_step(capsys, *argv: str) -> str:
    assert profile.main_train_step([*argv, '--size', '64', '64', '--batch',
                                    '2', '--threads', '1']) == 0
    return capsys.readouterr().out


def test_saved_activations(capsys):
    out = run_train_step(capsys, 'saved', 'fcaformer', 'convnext-t',
                         '--with-cp', 'both', '--top', '12')
    totals = {(m, cp): float(mib) for m, cp, mib in re.findall(
        r'## (\S+) with_cp=(\w+)\nsaved for backward: (\S+) MiB', out)}
    assert list(totals) == [(m, cp) for m in ('fcaformer', 'convnext-t')
                            for cp in ('False', 'True')]
    # Activation checkpointing keeps less for the backward pass.
    for model in ('fcaformer', 'convnext-t'):
        assert 0 < totals[model, 'True'] < totals[model, 'False']
    assert 'largest 12 tensors' in out


def test_saved_activations_are_attributed_to_modules():
    model = profile.build_training('fcaformer')
    records = profile.saved_activations(model, torch.randn(1, 3, 64, 64))
    assert all(r['bytes'] > 0 for r in records)
    # Every stage keeps something, named by the module that saved it.
    for stage in range(4):
        assert any(r['module'].startswith(f'layer_{stage}.')
                   for r in records)
    # Most saved tensors are named by the autograd node that keeps them.
    named = [r for r in records if r['grad_fn'] is not None]
    assert len(named) > len(records) / 2


def test_operator_profile(capsys):
    out = run_train_step(capsys, 'ops', 'fcaformer', '--top', '5')
    assert re.search(r'CPU allocator peak during forward\+backward: \d+ MiB',
                     out)
    assert 'top operators by self CPU time' in out
    assert 'top operators by memory allocated' in out
