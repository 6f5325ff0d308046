"""Tests of tools/analysis_tools/benchmark.py: it runs and writes its JSON.

Tiny inputs and one repetition; nothing here asserts on timings.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from fcaformer_mm.utils import official

ROOT = Path(__file__).parents[2]
TOOL = ROOT / 'tools' / 'analysis_tools' / 'benchmark.py'
CONFIG = ROOT / 'configs' / 'upernet_fcaformer_l2_ade20k.py'


@pytest.fixture(scope='module')
def bench():
    spec = importlib.util.spec_from_file_location('fca_benchmark', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def run_tool(bench, tmp_path, *argv):
    out = tmp_path / 'bench.json'
    assert bench.main([*argv, '--json', str(out), '--threads', '1']) == 0
    return json.loads(out.read_text())


def check_entry(entry, batch):
    assert entry['median_ms'] > 0 and entry['min_ms'] > 0
    assert entry['min_ms'] <= entry['median_ms']
    assert entry['batch'] == batch
    assert entry['images_per_s'] == pytest.approx(
        batch / entry['median_ms'] * 1e3)
    assert len(entry['times_ms']) == 2


def test_backbones_all_timed_metrics(bench, tmp_path):
    report = run_tool(
        bench, tmp_path, '--models', 'fcaformer', 'fcaformer-deploy',
        'convnext-t', 'swin-t', '--metrics', 'latency', 'throughput',
        'train', 'compiled', '--compile-backend', 'eager', '--size', '32',
        '48', '--batch', '2', '--train-batch', '2', '--warmup', '0',
        '--repeats', '2', '--precisions', 'fp32', 'bf16', '--plot',
        str(tmp_path / 'bench.png'))
    meta = report['meta']
    assert meta['size'] == [32, 48] and meta['reference'] == 'convnext-t'
    assert meta['threads'] == 1 and meta['repeats'] == 2
    assert 'loadavg' in meta['machine_before']
    assert set(report['times']) == {
        f'{m}/{p}'
        for m in ('latency', 'throughput', 'train', 'compiled')
        for p in ('fp32', 'bf16')
    }
    models = ['fcaformer', 'fcaformer-deploy', 'convnext-t', 'swin-t']
    for key, results in report['times'].items():
        metric = key.split('/')[0]
        expected = {
            'train': [m for m in models if m != 'fcaformer-deploy'],
            'compiled': models + ['convnext-t (eager)'],
        }.get(metric, models)
        assert list(results) == expected
        batch = {'latency': 1, 'compiled': 1, 'throughput': 2, 'train': 2}
        for entry in results.values():
            check_entry(entry, batch[metric])
            assert 'ratio_to_official' not in entry
        assert results['convnext-t']['ratio_to_convnext-t'] == 1.0
        assert results['fcaformer']['ratio_to_convnext-t'] == pytest.approx(
            results['fcaformer']['median_ms'] /
            results['convnext-t']['median_ms'])
        if metric == 'compiled':
            assert all(e['compile_s'] > 0 for e in results.values()
                       if e is not results['convnext-t (eager)'])
            entry = results['fcaformer']
            assert entry['ratio_to_convnext-t_eager'] == pytest.approx(
                entry['median_ms'] /
                results['convnext-t (eager)']['median_ms'])
    assert report['memory'] == []
    assert (tmp_path / 'bench.png').stat().st_size > 0


def test_blas_variant_runs_without_onednn(bench, tmp_path, monkeypatch):
    from fcaformer_mm.models.utils import cpu_kernels, current_options

    seen = []
    real = cpu_kernels.linear

    def spy(*args, **kwargs):
        seen.append(current_options().onednn_linear)
        return real(*args, **kwargs)

    monkeypatch.setattr(cpu_kernels, 'linear', spy)
    report = run_tool(bench, tmp_path, '--models', 'fcaformer',
                      'fcaformer-blas', '--metrics', 'latency', 'train',
                      '--size', '32', '32', '--warmup', '0', '--repeats',
                      '1', '--precisions', 'fp32')
    assert list(report['times']['latency/fp32']) == [
        'fcaformer', 'fcaformer-blas'
    ]
    # Training is the same code for both: only one row.
    assert list(report['times']['train/fp32']) == ['fcaformer']
    # Both settings were used, and the default is in force afterwards.
    assert True in seen and False in seen
    assert current_options().onednn_linear is True
    # Not in the default set.
    assert 'fcaformer-blas' not in bench.DEFAULT_MODELS


def test_memory_with_and_without_checkpointing(bench, tmp_path):
    report = run_tool(bench, tmp_path, '--models', 'fcaformer', '--metrics',
                      'memory', '--size', '64', '64', '--train-batch', '1',
                      '--precisions', 'fp32')
    assert report['times'] == {}
    rows = report['memory']
    assert [(r['model'], r['with_cp']) for r in rows] == [
        ('fcaformer', False), ('fcaformer', True)]
    for row in rows:
        assert 'error' not in row, row.get('error')
        assert row['source'] == 'backbone' and row['batch'] == 1
        assert row['method'] == 'cpu_vmhwm'
        assert row['peak_total_mib'] > 0


def test_whole_models_under_the_same_heads(bench, tmp_path):
    report = run_tool(bench, tmp_path, '--models', 'fcaformer',
                      'convnext-t', '--configs', str(CONFIG), '--metrics',
                      'latency', 'train', '--size', '64', '64', '--warmup',
                      '0', '--repeats', '2', '--precisions', 'fp32')
    for key in ('latency/fp32', 'train/fp32'):
        results = report['times'][key]
        stem = CONFIG.stem
        assert list(results) == [
            'fcaformer', 'convnext-t', f'{stem}/fcaformer',
            f'{stem}/convnext-t'
        ]
        whole = results[f'{stem}/fcaformer']
        assert whole['ratio_to_convnext-t'] == pytest.approx(
            whole['median_ms'] / results[f'{stem}/convnext-t']['median_ms'])


FAKE_OFFICIAL = '''
import torch
from torch import nn
from timm.models.layers import trunc_normal_, DropPath, to_2tuple
from timm.models.registry import register_model
from mmcv_custom import load_checkpoint
from mmseg.utils import get_root_logger
from mmseg.models.builder import BACKBONES


@BACKBONES.register_module()
class FcaFormer_SH_512(nn.Module):
    def __init__(self, dims, depths, num_heads, seg_head_dims,
                 drop_path_rate=0.):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(3, c, 1, stride=2**(i + 2))
            for i, c in enumerate(seg_head_dims))
        self.drop = DropPath(drop_path_rate)

    def forward(self, x):
        return [self.drop(conv(x)) for conv in self.convs]
'''


def test_official_from_a_checkout(bench, tmp_path):
    file = tmp_path / 'FcaFormer' / official.DENSE_FILE
    file.parent.mkdir(parents=True)
    file.write_text(FAKE_OFFICIAL)
    before = {k: sys.modules.get(k) for k in ('mmseg', 'timm', 'mmcv_custom')}
    report = run_tool(bench, tmp_path, '--models', 'official', 'fcaformer',
                      '--official-path', str(tmp_path / 'FcaFormer'),
                      '--metrics', 'latency', '--size', '32', '32',
                      '--warmup', '0', '--repeats', '2', '--precisions',
                      'fp32')
    after = {k: sys.modules.get(k) for k in before}
    assert before == after
    results = report['times']['latency/fp32']
    assert results['official']['ratio_to_official'] == 1.0
    assert 'ratio_to_official' in results['fcaformer']
    assert report['meta']['official_path'].endswith('FcaFormer')


def test_argument_errors(bench):
    with pytest.raises(SystemExit):
        bench.parse_args(['--models', 'official'])
    with pytest.raises(SystemExit):
        bench.parse_args(['--precisions', 'fp16'])
    args = bench.parse_args([])
    assert 'official' not in args.models
    assert args.precisions == ['fp32', 'bf16']
