"""fcaformer_mm.analysis.benchmark, the library behind
``tools/analysis_tools/benchmark.py``: it runs and writes its JSON.

Tiny inputs and one repetition; nothing here asserts on timings.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from fcaformer_mm.analysis import benchmark, edge_table, models, official

ROOT = Path(__file__).parents[2]
CONFIG = ROOT / 'configs' / 'upernet_fcaformer_l2_ade20k.py'


@pytest.fixture(scope='module')
def bench():
    return benchmark


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
        # Paired ratios of the two rounds of the same round-robin.
        paired = [a / b for a, b in zip(results['fcaformer']['times_ms'],
                                        results['convnext-t']['times_ms'])]
        rounds = results['fcaformer']['round_ratio_to_convnext-t']
        assert rounds['rounds'] == 2
        assert rounds['median'] == pytest.approx(sum(paired) / 2)
        assert (rounds['min'], rounds['max']) == pytest.approx(
            (min(paired), max(paired)))
        if metric == 'compiled':
            assert all(e['compile_s'] > 0 for e in results.values()
                       if e is not results['convnext-t (eager)'])
            entry = results['fcaformer']
            assert entry['ratio_to_convnext-t_eager'] == pytest.approx(
                entry['median_ms'] /
                results['convnext-t (eager)']['median_ms'])
    assert report['memory'] == []
    assert (tmp_path / 'bench.png').stat().st_size > 0


def test_memory_with_and_without_checkpointing(bench, tmp_path):
    report = run_tool(bench, tmp_path, '--models', 'fcaformer',
                      'fcaformer-deploy', 'convnext-t', '--metrics',
                      'memory', '--size', '64', '64', '--train-batch', '1',
                      '--precisions', 'fp32')
    assert report['times'] == {}
    rows = report['memory']
    # Deployed models are not trained.
    assert [(r['model'], r['with_cp']) for r in rows] == [
        (m, cp) for m in ('fcaformer', 'convnext-t')
        for cp in (False, True)]
    ref = {r['with_cp']: r['peak_mib'] for r in rows
           if r['model'] == 'convnext-t'}
    for row in rows:
        assert 'error' not in row, row.get('error')
        assert row['source'] == 'backbone' and row['batch'] == 1
        assert row['method'] == 'cpu_vmhwm_live_tensors'
        assert row['peak_total_mib'] > 0
        assert row['ratio_to_convnext-t'] == pytest.approx(
            row['peak_mib'] / ref[row['with_cp']])
    assert 'x convnext-t' in bench.format_table(report)


def test_backbones_train_as_their_upernet_configs(bench):
    """Drop path and layer scale of the UperNet configs, which only the
    training metrics see."""
    from mmengine.config import Config

    fca = Config.fromfile(str(CONFIG)).model.backbone
    fcaformer = models.build_backbone('fcaformer')
    last = fcaformer.layer_3.blocks[-1]
    assert last.drop_path.drop_prob == pytest.approx(fca.drop_path_rate)
    assert torch.all(last.gamma_1 == fca.layer_scale_init_value)
    assert torch.all(fcaformer.layer_0.blocks[0].gamma ==
                     fca.layer_scale_init_value)

    import mmseg
    mmseg_configs = Path(mmseg.__file__).parent / '.mim' / 'configs'
    for name, rel in (
        ('convnext-t',
         'convnext/convnext-tiny_upernet_8xb2-amp-160k_ade20k-512x512.py'),
        ('swin-t', 'swin/swin-tiny-patch4-window7-in1k-pre_upernet_'
         '8xb2-160k_ade20k-512x512.py')):
        cfg = Config.fromfile(str(mmseg_configs / rel)).model.backbone
        assert models.UPERNET_BACKBONE[name]['drop_path_rate'] == \
            cfg.drop_path_rate
        if name == 'convnext-t':
            convnext = models.build_backbone(name)
            block = convnext.stages[-1][-1]
            assert block.drop_path.drop_prob == pytest.approx(
                cfg.drop_path_rate)
            assert torch.all(block.gamma == cfg.layer_scale_init_value)


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


# --------------------------------------------------------------------------
# --table edge: the paper's edge-device table of classifiers
# --------------------------------------------------------------------------
EDGE_NAMES = ['fcaformer-l1', 'fcaformer-l1-deploy', 'convnext-t']


def test_edge_table_l1_against_convnext_t(bench, tmp_path, capsys):
    png = tmp_path / 'edge.png'
    report = run_tool(bench, tmp_path, '--table', 'edge', '--models',
                      *EDGE_NAMES, '--size', '32', '32', '--warmup', '0',
                      '--repeats', '1', '--plot', str(png))
    meta = report['meta']
    assert meta['table'] == 'edge' and meta['size'] == [32, 32]
    assert meta['metrics'] == ['latency', 'memory']
    assert meta['precisions'] == ['fp32']
    latency = report['times']['latency/fp32']
    assert list(latency) == EDGE_NAMES
    assert all(e['batch'] == 1 and e['median_ms'] > 0
               for e in latency.values())

    # Inference memory: one fresh process per model, weights included.
    memory = report['inference_memory']
    assert list(memory) == EDGE_NAMES
    for name, m in memory.items():
        assert 'error' not in m, m.get('error')
        assert m['method'] == 'vmhwm'
        assert m['params'] == report['params'][name]
        # Weights and activations: the weights are resident, the forward
        # adds to them; the fresh process also counts its start-up.
        assert m['resident_weights_mib'] >= 0.9 * m['weights_mib'] > 0
        assert m['memory_mib'] == pytest.approx(
            m['resident_weights_mib'] + m['activations_mib'])
        assert m['fresh_process_mib'] > m['resident_weights_mib']
    # Deploying folds the Conv-BNs: fewer parameters.
    assert memory['fcaformer-l1-deploy']['params'] < memory[
        'fcaformer-l1']['params']

    rows = {r['model']: r for r in report['edge']['rows']}
    assert list(rows) == EDGE_NAMES
    ref = latency['convnext-t']['median_ms']
    ref_mib = memory['convnext-t']['memory_mib']
    for name, row in rows.items():
        assert row['median_ms'] == latency[name]['median_ms']
        assert row['latency_ratio'] == pytest.approx(
            latency[name]['median_ms'] / ref)
        assert row['memory_ratio'] == pytest.approx(
            memory[name]['memory_mib'] / ref_mib)
        assert row['fresh_process_ratio'] == pytest.approx(
            memory[name]['fresh_process_mib'] /
            memory['convnext-t']['fresh_process_mib'])
    # The paper's ARM figures beside the measured ones.
    for name in ('fcaformer-l1', 'fcaformer-l1-deploy'):
        assert (rows[name]['paper_ms'], rows[name]['paper_mem'],
                rows[name]['top1']) == (312, 42, 80.3)
        assert rows[name]['paper_latency_ratio'] == pytest.approx(312 / 875)
        assert rows[name]['paper_memory_ratio'] == pytest.approx(42 / 129)
    assert (rows['convnext-t']['paper_ms'],
            rows['convnext-t']['paper_mem']) == (875, 129)

    pairs = report['edge']['pairs']
    assert [(p['model'], p['peer']) for p in pairs] == [
        ('fcaformer-l1', 'convnext-t'), ('fcaformer-l1-deploy', 'convnext-t')]
    for p in pairs:
        row = rows[p['model']]
        assert p['latency_ratio'] == pytest.approx(row['latency_ratio'])
        assert p['memory_ratio'] == pytest.approx(row['memory_ratio'])
        assert p['mac_ratio'] == pytest.approx(1.4 / 4.5)
        assert p['paper_memory_ratio'] == pytest.approx(42 / 129)
        assert p['paper_latency_ratio'] == pytest.approx(312 / 875)
        assert p['fresh_process_ratio'] == pytest.approx(
            row['fresh_process_ratio'])
        # One round: the paired ratio is the ratio of the two times.
        assert p['latency_round_ratio']['rounds'] == 1
        assert p['latency_round_ratio']['median'] == pytest.approx(
            row['times_ms'][0] / rows['convnext-t']['times_ms'][0])

    out = capsys.readouterr().out
    assert 'Edge-device table' in out and 'Pairs' in out
    line = next(ln for ln in out.splitlines()
                if ln.startswith('FcaFormer-L1 ') and '312' in ln)
    assert f'{rows["fcaformer-l1"]["latency_ratio"]:.2f}' in line
    assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_edge_table_training_step_and_its_memory(bench, tmp_path, capsys):
    report = run_tool(bench, tmp_path, '--table', 'edge', '--models',
                      *EDGE_NAMES, '--metrics', 'train', 'train-memory',
                      '--size', '32', '32', '--train-batch', '2',
                      '--warmup', '0', '--repeats', '2')
    assert report['meta']['metrics'] == ['train', 'train-memory']
    # Deployed models are for inference: neither timed nor measured.
    train = report['times']['train/fp32']
    assert list(train) == ['fcaformer-l1', 'convnext-t']
    for entry in train.values():
        check_entry(entry, 2)
    assert train['fcaformer-l1']['ratio_to_convnext-t'] == pytest.approx(
        train['fcaformer-l1']['median_ms'] / train['convnext-t']['median_ms'])
    rows = report['memory']
    assert [(r['model'], r['source'], r['with_cp'], r['batch'])
            for r in rows] == [('fcaformer-l1', 'classifier', False, 2),
                               ('convnext-t', 'classifier', False, 2)]
    for row in rows:
        assert 'error' not in row, row.get('error')
        assert row['method'] == 'cpu_vmhwm_live_tensors'
        assert row['peak_mib'] > 0
        assert row['params'] == report['params'][row['model']]
    assert rows[0]['ratio_to_convnext-t'] == pytest.approx(
        rows[0]['peak_mib'] / rows[1]['peak_mib'])
    out = capsys.readouterr().out
    assert 'classifier/fcaformer-l1' in out
    assert 'Edge-device table' not in out  # no latency, no inference memory


@pytest.mark.parametrize('name', ['fcaformer-l1', 'efficientformer-l1'])
def test_edge_classifier_loss_reaches_every_weight(bench, name):
    """The classifiers' training loss (EfficientFormer's distillation head
    has none in mmpretrain) is a cross-entropy that trains every weight."""

    model, scope = edge_table.build_classifier(name)
    subject = models.Subject(name, name, model.train(), scope)
    assert subject.trainable
    loss = subject.loss(torch.randn(2, 3, 224, 224))
    # Random weights: about the loss of a uniform guess over 1000 classes.
    assert 4 < loss.item() < 10
    loss.backward()
    missing = [n for n, p in model.named_parameters()
               if p.requires_grad and p.grad is None]
    assert not missing


def test_round_ratios_pair_the_rounds():
    """Each paired ratio divides two times of the same round (the same
    machine load): ratios of times of different rounds never enter."""
    round_ratios = edge_table.round_ratios

    ref = [100., 140., 100., 150., 160.]
    model = [0.8 * t for t in ref]
    model[1], model[3] = model[3], model[1]  # load peaks swapped
    rounds = round_ratios(model, ref)
    assert rounds['rounds'] == 5
    assert rounds['median'] == pytest.approx(0.8)
    assert rounds['min'] == pytest.approx(0.8 * 140 / 150)
    assert rounds['max'] == pytest.approx(0.8 * 150 / 140)
    # Not timed in the same rounds, or not timed: no paired ratios.
    assert round_ratios(model[:4], ref) is None
    assert round_ratios(None, ref) is None and round_ratios([], []) is None


def test_edge_table_models_match_their_configs():
    """Every model of the table builds from a config that exists, with the
    arch its name says; EfficientFormer's top-1 is that of the installed
    mmpretrain metafile."""
    import yaml
    from mmengine.config import Config


    archs = {'t': 'tiny', 's': 'small', 'b': 'base', 'l': 'large'}
    metafiles = {}
    for name, model in edge_table.EDGE_MODELS.items():
        cfg = edge_table.classifier_config(name)
        assert isinstance(cfg, Config)
        backbone = cfg.model.backbone
        family, size = name.split('-')[:2]
        expected = archs.get(size, size) if family in (
            'convnext', 'swin') else size
        assert backbone.arch == expected, name
        assert cfg.model.head.num_classes == 1000
        if model.top1_source != 'mmpretrain metafile':
            continue
        rel = model.config.split('::', 1)[1]
        folder = Path(edge_table.mmpretrain_config_dir()) / rel.split('/')[0]
        if folder not in metafiles:
            metafiles[folder] = yaml.safe_load(
                (folder / 'metafile.yml').read_text())['Models']
        entries = [m for m in metafiles[folder]
                   if m.get('Config', '').endswith(rel)]
        assert entries, f'{rel} not in the metafile'
        top1 = entries[0]['Results'][0]['Metrics']['Top 1 Accuracy']
        assert model.top1 == pytest.approx(top1), name
        flops = entries[0]['Metadata']['FLOPs'] / 1e9
        assert model.gmacs == pytest.approx(flops, abs=0.05), name


def test_edge_and_dense_argument_errors(bench):
    with pytest.raises(SystemExit):  # a dense name in the edge table
        bench.parse_args(['--table', 'edge', '--models', 'fcaformer'])
    with pytest.raises(SystemExit):  # an edge name in the dense table
        bench.parse_args(['--models', 'fcaformer-l1'])
    with pytest.raises(SystemExit):  # the dense table's is 'memory'
        bench.parse_args(['--metrics', 'train-memory'])
    with pytest.raises(SystemExit):  # inference memory: CPU only
        bench.parse_args(['--table', 'edge', '--device', 'cuda',
                          '--metrics', 'memory'])
    assert 'train-memory' not in bench.parse_args([]).metrics
    with pytest.raises(SystemExit):
        bench.parse_args(['--table', 'edge', '--reference', 'swin-x'])
    with pytest.raises(SystemExit):  # fixed 7x7 attention map
        bench.parse_args(['--table', 'edge', '--models',
                          'efficientformer-l1', '--size', '32', '32'])
    with pytest.raises(SystemExit):
        bench.parse_args(['--arch', 'l1', '--models', 'official',
                          '--official-path', '/nowhere'])
    args = bench.parse_args(['--table', 'edge'])
    assert args.models == list(bench.EDGE_MODEL_NAMES)
    assert args.size == [224, 224] and args.precisions == ['fp32']
    assert args.metrics == ['latency', 'memory']
    args = bench.parse_args([])
    assert args.size == [512, 512] and args.arch == 'l2'


def test_dense_backbone_of_any_arch(bench, tmp_path):
    from fcaformer_mm.models import FcaFormer

    report = run_tool(bench, tmp_path, '--arch', 'l1', '--models',
                      'fcaformer', 'fcaformer-deploy', 'convnext-t',
                      '--metrics', 'latency', '--size', '32', '32',
                      '--warmup', '0', '--repeats', '1', '--precisions',
                      'fp32')
    assert report['meta']['arch'] == 'l1'
    l1 = FcaFormer('l1', out_channels=(96, 192, 384, 768))
    assert report['params']['fcaformer'] == sum(
        p.numel() for p in l1.parameters())
    results = report['times']['latency/fp32']
    assert list(results) == ['fcaformer', 'fcaformer-deploy', 'convnext-t']


def test_training_memory_without_threads_and_of_another_arch(bench, tmp_path):
    # The memory child once passed --threads' default (None) to
    # torch.set_num_threads and failed; it must also build the --arch asked.
    out = tmp_path / 'bench.json'
    assert bench.main(['--arch', 'l1', '--models', 'fcaformer', '--metrics',
                       'memory', '--size', '64', '64', '--train-batch', '1',
                       '--precisions', 'fp32', '--json', str(out)]) == 0
    from fcaformer_mm.models import FcaFormer

    l1 = FcaFormer('l1', out_channels=(96, 192, 384, 768))
    rows = json.loads(out.read_text())['memory']
    assert [r['with_cp'] for r in rows] == [False, True]
    for row in rows:
        assert 'error' not in row, row.get('error')
        assert row['peak_mib'] > 0
        assert row['params'] == sum(p.numel() for p in l1.parameters())


@pytest.mark.parametrize('runtime,extra', [
    ('ort', []),
    # The runner's compile path with a backend that needs no C compiler;
    # inductor itself is what tools/analysis_tools/benchmark.py defaults to.
    ('compile', ['--compile-backend', 'aot_eager']),
])
def test_edge_table_in_other_runtimes(bench, tmp_path, capsys, runtime,
                                      extra):
    names = ['fcaformer-l1', 'fcaformer-l1-deploy', 'convnext-t']
    report = run_tool(bench, tmp_path, '--table', 'edge', '--models', *names,
                      '--size', '32', '32', '--warmup', '0', '--repeats',
                      '2', '--metrics', 'latency', '--runtime', runtime,
                      *extra)
    assert report['meta']['runtime'] == runtime
    latency = report['times']['latency/fp32']
    assert list(latency) == names
    for entry in latency.values():
        assert entry['runtime'] == runtime
        assert len(entry['times_ms']) == 2 and entry['median_ms'] > 0
        assert entry['prepare_s'] > 0
        # The runtime computes what the eager model computes.
        assert entry['max_abs_diff_to_eager'] <= 1e-4 * max(
            entry['max_abs_eager_output'], 1e-30)
    pair = report['edge']['pairs'][0]
    assert pair['latency_round_ratio']['rounds'] == 2
    assert f', {runtime};' in capsys.readouterr().out


def test_runtime_argument_errors(bench):
    with pytest.raises(SystemExit):  # ONNX Runtime is timed in fp32
        bench.parse_args(['--table', 'edge', '--runtime', 'ort',
                          '--precisions', 'bf16'])
    with pytest.raises(SystemExit):  # compiled beside eager, or a runtime
        bench.parse_args(['--runtime', 'compile', '--metrics', 'compiled'])
    with pytest.raises(SystemExit):
        bench.parse_args(['--runtime', 'tvm'])
