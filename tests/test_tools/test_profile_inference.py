"""Tests of tools/analysis_tools/profile_inference.py on a tiny input.

Nothing here asserts on timings, only on how the report is made.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).parents[2]
TOOL = ROOT / 'tools' / 'analysis_tools' / 'profile_inference.py'


@pytest.fixture(scope='module')
def tool():
    spec = importlib.util.spec_from_file_location('fca_profile', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_profile_of_l1(tool, tmp_path, capsys):
    threads = torch.get_num_threads()
    out = tmp_path / 'profile.json'
    try:
        assert tool.main(['fcaformer-l1', '--size', '32', '32', '--threads',
                          '1', '--warmup', '0', '--repeats', '1', '--top',
                          '5', '--json', str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
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


def test_onednn_linear_option(tool, tmp_path):
    threads = torch.get_num_threads()
    out = tmp_path / 'profile.json'
    ops = {}
    try:
        for flag in ([], ['--onednn-linear']):
            assert tool.main(['fcaformer-l1', '--size', '32', '32',
                              '--threads', '1', '--warmup', '0', '--repeats',
                              '1', '--top', '200', '--json', str(out),
                              *flag]) == 0
            [p] = json.loads(out.read_text())
            ops[bool(flag)] = {o['op'] for o in p['top_ops']}
            assert p['onednn_linear'] is bool(flag)
    finally:
        torch.set_num_threads(threads)
    assert 'fcaformer_mm::onednn_linear' in ops[True]
    assert 'fcaformer_mm::onednn_linear' not in ops[False]
    assert 'aten::addmm' in ops[False]


def test_unknown_model(tool):
    with pytest.raises(SystemExit):
        tool.parse_args(['fcaformer-l9'])
