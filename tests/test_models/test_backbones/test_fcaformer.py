"""Tests of the FcaFormer backbone (plain pytest, CPU, small inputs)."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest
import torch
from mmengine.model import BaseModule
from mmengine.registry import DefaultScope
from torch import nn

from fcaformer_mm.analysis.seeded import (
    seeded_input,
    seeded_state_dict,
    shapes_of,
)
from fcaformer_mm.models.backbones.fcaformer import FcaFormer
from fcaformer_mm.models.utils import checkpoint as checkpoint_module
from fcaformer_mm.registry import MODELS

GOLDEN = Path(__file__).parents[2] / 'data' / 'fcaformer_golden.pth'
OFFICIAL_KEYS = (Path(__file__).parents[2] / 'data' /
                 'fcaformer_l2_official_state_dict.json')
# A small custom arch keeps the tests fast; stage 2 has three blocks so that
# cross tokens of several blocks and both padding sides are exercised.
TINY = dict(embed_dims=[16, 32, 32, 48], depths=[1, 2, 3, 2], num_heads=[2, 3])


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def official_classifier_state(arch: str | dict, seed: int,
                              num_classes: int = 10) -> dict:
    """A state dict in the layout of the official classifier."""
    model = FcaFormer(arch, out_type='avg_featmap')
    shapes = shapes_of(model)
    dim = model.embed_dims[-1]
    shapes['head.weight'] = torch.Size([num_classes, dim])
    shapes['head.bias'] = torch.Size([num_classes])
    return seeded_state_dict(shapes, seed)


def write_official_checkpoint(path: Path, arch: str | dict = TINY) -> dict:
    """Write a checkpoint in the layout of the official training script."""
    model_state = official_classifier_state(arch, seed=1)
    ema_state = official_classifier_state(arch, seed=2)
    ckpt = {
        'model': model_state,
        'model_ema': ema_state,
        'optimizer': {
            'state': {},
            'param_groups': [{
                'lr': 1e-3
            }]
        },
        'epoch': 299,
        'scaler': {
            'scale': 65536.0
        },
        'args': argparse.Namespace(model='fcaformer_l1', epochs=300),
    }
    torch.save(ckpt, path)
    return ckpt


class LogRecorder:
    """Stands in for ``print_log`` to capture what the loader reports."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def __call__(self, msg, logger=None, level=None) -> None:
        self.messages.append(str(msg))

    def text(self) -> str:
        return '\n'.join(self.messages)


@pytest.fixture
def log(monkeypatch) -> LogRecorder:
    recorder = LogRecorder()
    monkeypatch.setattr(checkpoint_module, 'print_log', recorder)
    return recorder


def assert_state_equal(model: nn.Module, expected: dict[str, torch.Tensor],
                       prefix: str = '') -> None:
    own = model.state_dict()
    checked = 0
    for key, value in expected.items():
        if not key.startswith(prefix):
            continue
        key = key[len(prefix):]
        if key in own:
            torch.testing.assert_close(own[key], value, rtol=0, atol=0)
            checked += 1
    assert checked > 0


# --------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------
def test_arch_names_and_aliases():
    for name in ('l2', 'fcaformer-l2', 'L2'):
        model = FcaFormer(name)
        assert model.embed_dims == [96, 192, 320, 480]
        assert model.depths == [2, 2, 7, 2]
        assert model.num_heads == [10, 15]
    custom = dict(embed_dims=[32, 64, 64, 96], depths=[1, 1, 2, 2],
                  num_heads=[2, 3])
    model = FcaFormer(custom)
    assert model.embed_dims == [32, 64, 64, 96]
    # The official 4-entry form of num_heads is accepted too.
    model = FcaFormer({**custom, 'num_heads': [0, 0, 2, 3]})
    assert model.num_heads == [2, 3]


def test_arch_errors():
    with pytest.raises(ValueError, match=r'Unavailable arch .*choose from '
                       r'\(.*fcaformer-l2.*l4\) or pass a dict\.'):
        FcaFormer('l5')
    with pytest.raises(ValueError, match='Unavailable arch'):
        FcaFormer(3)
    with pytest.raises(ValueError,
                       match=r"misses the keys \['depths', 'num_heads'\]"):
        FcaFormer(dict(embed_dims=[32, 64, 64, 96]))
    with pytest.raises(ValueError, match='must have 4 entries'):
        FcaFormer(dict(embed_dims=[32, 64, 96], depths=[1, 1, 2],
                       num_heads=[2, 3]))
    with pytest.raises(ValueError, match='divisible'):
        FcaFormer(dict(embed_dims=[32, 64, 64, 96], depths=[1, 1, 2, 2],
                       num_heads=[5, 3]))


def test_other_argument_errors():
    with pytest.raises(ValueError, match='out_type'):
        FcaFormer(TINY, out_type='cls_token')
    with pytest.raises(ValueError, match='Invalid out_indices 4'):
        FcaFormer(TINY, out_indices=(1, 4))
    with pytest.raises(ValueError, match='Invalid out_indices -5'):
        FcaFormer(TINY, out_indices=-5)
    with pytest.raises(ValueError, match='last stage only'):
        FcaFormer(TINY, out_type='avg_featmap', out_indices=(0, 3))
    with pytest.raises(ValueError, match='out_channels'):
        FcaFormer(TINY, out_channels=[16, 16])
    with pytest.raises(ValueError, match='frozen_stages'):
        FcaFormer(TINY, frozen_stages=4)
    with pytest.raises(ValueError, match='window_sizes'):
        FcaFormer(TINY, window_sizes=(14, ))


@pytest.mark.parametrize('kwargs, message', [
    (dict(drop_path_rate=1.0), r'drop_path_rate must be a number in \[0, 1\)'),
    (dict(drop_path_rate=-0.1), 'drop_path_rate'),
    (dict(drop_path_rate='0.1'), 'drop_path_rate'),
    (dict(out_indices=True), 'sequence of ints'),
    (dict(out_indices=(0, False)), 'sequence of ints'),
    (dict(out_indices=(1.0, 2)), 'sequence of ints'),
    (dict(out_indices='23'), 'sequence of ints'),
    (dict(window_sizes=(14.0, 7)), 'two positive ints'),
    (dict(window_sizes=(True, 7)), 'two positive ints'),
    (dict(window_sizes=(14, 0)), 'two positive ints'),
    (dict(window_sizes='14'), 'two positive ints'),
])
def test_bad_argument_types(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FcaFormer(TINY, **kwargs)


def test_bad_image_dtypes():
    model = FcaFormer(TINY).eval()
    x = seeded_input((1, 3, 32, 32), seed=5)
    with pytest.raises(TypeError, match=r'torch.uint8 images.*x.float\(\)'):
        model((x * 50).to(torch.uint8))
    with pytest.raises(TypeError, match=r'torch.int64 images'):
        model(x.long())
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        with pytest.raises(TypeError, match=f'{dtype} images but its weights '
                           r'are torch.float32.*torch.autocast'):
            model(x.to(dtype))
    # The fixes the messages name work.
    with torch.no_grad():
        model(x)
        model.double()(x.double())
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        FcaFormer(TINY).eval()(x.bfloat16())


def test_build_from_registry():
    # Scoped: another test's Runner may have left a different default scope.
    with DefaultScope.overwrite_default_scope('fcaformer_mm'):
        model = MODELS.build(dict(type='FcaFormer', arch='l1'))
    assert isinstance(model, FcaFormer)


# --------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------
@pytest.fixture(scope='module')
def l1_input() -> torch.Tensor:
    return seeded_input((2, 3, 64, 64), seed=3)


@pytest.mark.parametrize('out_indices, expected', [
    (None, (0, 1, 2, 3)),
    (0, (0, )),
    (2, (2, )),
    (-1, (3, )),
    ((0, 2), (0, 2)),
    ([-1, 1], (1, 3)),
])
def test_out_indices(out_indices, expected, l1_input):
    given = list(out_indices) if isinstance(out_indices, list) else None
    model = FcaFormer(TINY, out_indices=out_indices).eval()
    if given is not None:
        assert out_indices == given, "the caller's list must not change"
    assert model.out_indices == expected
    for i in range(4):
        assert hasattr(model, f'head{i}') == (i in expected)
        assert hasattr(model, f'norm{i}') == (i in expected)
    assert not hasattr(model, 'norm_head')
    with torch.no_grad():
        outs = model(l1_input)
    assert isinstance(outs, tuple)
    widths = TINY['embed_dims']
    assert [tuple(o.shape) for o in outs] == [
        (2, widths[i], 16 // 2**i, 16 // 2**i) for i in expected
    ]


def test_avg_featmap(l1_input):
    model = FcaFormer(TINY, out_type='avg_featmap').eval()
    assert model.out_indices == (3, )
    assert not any(hasattr(model, f'head{i}') for i in range(4))
    assert not any(hasattr(model, f'norm{i}') for i in range(4))
    with torch.no_grad():
        outs = model(l1_input)
    assert len(outs) == 1 and outs[0].shape == (2, 48)
    assert FcaFormer(TINY, out_type='avg_featmap',
                     out_indices=-1).out_indices == (3, )


def test_out_channels(l1_input):
    assert FcaFormer('l2').out_channels == [96, 192, 384, 768]
    assert FcaFormer('fcaformer-l2').out_channels == [96, 192, 384, 768]
    assert FcaFormer('l1').out_channels == [64, 128, 192, 320]
    model = FcaFormer(TINY, out_channels=[8, 16, 24, 32]).eval()
    assert model.head2.weight.shape == (24, 32, 1, 1)
    assert model.norm2.weight.shape == (24, )
    with torch.no_grad():
        outs = model(l1_input)
    assert [o.shape[1] for o in outs] == [8, 16, 24, 32]


@pytest.mark.parametrize('size', [(33, 33), (65, 97), (32, 45)])
def test_odd_input_sizes(size):
    model = FcaFormer(TINY, out_channels=[8, 8, 8, 8]).eval()
    with torch.no_grad():
        outs = model(seeded_input((1, 3, *size), seed=4))
    h, w = size
    for i, out in enumerate(outs):
        for _ in range(i + 2):
            h, w = math.ceil(h / 2), math.ceil(w / 2)
        assert out.shape == (1, 8, h, w)
        assert torch.isfinite(out).all()
        h, w = size


def test_large_odd_input():
    model = FcaFormer(TINY, out_indices=(0, 3)).eval()
    with torch.no_grad():
        outs = model(seeded_input((1, 3, 513, 701), seed=5))
    assert [tuple(o.shape) for o in outs] == [(1, 16, 129, 176),
                                             (1, 48, 17, 22)]


def test_wrong_input_errors():
    model = FcaFormer(TINY).eval()
    with pytest.raises(ValueError, match=r'expects \(B, 3, H, W\).*'
                       r'\(1, 1, 64, 64\)'):
        model(torch.rand(1, 1, 64, 64))
    with pytest.raises(ValueError, match='expects'):
        model(torch.rand(3, 64, 64))
    gray = FcaFormer(TINY, in_channels=1).eval()
    with torch.no_grad():
        assert gray(torch.rand(1, 1, 32, 32))[0].shape == (1, 16, 8, 8)


def test_windowed_stage_matches_whole_map_attention():
    # A map of exactly one window: the padding branch must be a no-op, and
    # a batch of images must give the same result as each image alone.
    model = FcaFormer(TINY, out_indices=(2, 3), window_sizes=(4, 2)).eval()
    x = seeded_input((2, 3, 64, 64), seed=6)
    with torch.no_grad():
        both = model(x)
        first = model(x[:1])
    for a, b in zip(both, first):
        torch.testing.assert_close(a[:1], b, rtol=0, atol=1e-5)


# --------------------------------------------------------------------------
# Training-time options
# --------------------------------------------------------------------------
def _frozen_parts(model: FcaFormer, frozen_stages: int) -> list[nn.Module]:
    parts = [model.patch_embed]
    for i in range(frozen_stages + 1):
        parts.append(getattr(model, f'layer_{i}').blocks)
        if i > 0:
            parts.append(getattr(model, f'layer_{i - 1}').downsample)
    return parts if frozen_stages >= 0 else []


@pytest.mark.parametrize('frozen_stages', [-1, 0, 1, 2, 3])
def test_frozen_stages(frozen_stages):
    model = FcaFormer(TINY, frozen_stages=frozen_stages)
    assert model.train() is model
    assert model.eval() is model
    assert model.train() is model
    frozen = _frozen_parts(model, frozen_stages)
    frozen_ids = set()
    for part in frozen:
        for module in part.modules():
            assert not module.training
        for param in part.parameters():
            assert not param.requires_grad
            frozen_ids.add(id(param))
    for name, param in model.named_parameters():
        if id(param) not in frozen_ids:
            assert param.requires_grad, name
    # The dense output layers are never frozen.
    for i in range(4):
        assert getattr(model, f'head{i}').weight.requires_grad
    if frozen_stages < 3:
        nxt = getattr(model, f'layer_{frozen_stages + 1}').blocks
        assert nxt.training


def test_norm_eval():
    model = FcaFormer(TINY, norm_eval=True)
    model.train()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    assert model.layer_2.blocks[0].norm1.training
    assert all(m.training for m in model.modules()
               if isinstance(m, nn.LayerNorm))
    model = FcaFormer(TINY, norm_eval=False).train()
    assert all(m.training for m in model.modules())


def test_with_cp_same_outputs_and_gradients():
    torch.manual_seed(0)
    x = seeded_input((2, 3, 64, 97), seed=7)
    results = []
    for with_cp in (False, True):
        model = FcaFormer(TINY, with_cp=with_cp)
        model.load_state_dict(seeded_state_dict(shapes_of(model), seed=8))
        model.train()
        inp = x.clone().requires_grad_(True)
        outs = model(inp)
        loss = sum((o * o).mean() for o in outs)
        loss.backward()
        grads = {
            name: p.grad.clone()
            for name, p in model.named_parameters() if p.grad is not None
        }
        stats = {
            key: value.clone()
            for key, value in model.state_dict().items()
            if 'running' in key or 'num_batches' in key
        }
        results.append(
            ([o.detach() for o in outs], inp.grad.clone(), grads, stats))
    (outs_a, gin_a, grads_a, stats_a), (outs_b, gin_b, grads_b,
                                        stats_b) = results
    # The recomputation in backward must not update BatchNorm twice.
    assert stats_a.keys() == stats_b.keys()
    for key in stats_a:
        torch.testing.assert_close(
            stats_a[key], stats_b[key], rtol=0, atol=1e-6, msg=key)
    for a, b in zip(outs_a, outs_b):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    torch.testing.assert_close(gin_a, gin_b, rtol=1e-4, atol=1e-6)
    assert grads_a.keys() == grads_b.keys()
    assert len(grads_a) == len(list(model.parameters()))
    for name in grads_a:
        torch.testing.assert_close(
            grads_a[name], grads_b[name], rtol=1e-4, atol=1e-6, msg=name)


def test_drop_path_in_training():
    model = FcaFormer(TINY, drop_path_rate=0.3).train()
    rates = [b.drop_path.drop_prob for b in model.layer_3.blocks]
    assert rates[-1] == pytest.approx(0.3)
    outs = model(seeded_input((2, 3, 32, 32), seed=9))
    assert all(torch.isfinite(o).all() for o in outs)


# --------------------------------------------------------------------------
# Numerics against the official code (golden fixtures)
# --------------------------------------------------------------------------
def golden_cases():
    return torch.load(GOLDEN, map_location='cpu', weights_only=True)


def test_golden_fixture_is_small():
    assert GOLDEN.stat().st_size < 400_000


@pytest.mark.parametrize('index', range(4))
def test_golden_outputs(index):
    golden = golden_cases()
    case = golden['cases'][index]
    model = FcaFormer(case['arch'], **case['kwargs']).eval()
    weights = seeded_state_dict(shapes_of(model), golden['weight_seed'])
    model.load_state_dict(weights, strict=True)
    x = seeded_input(tuple(case['input_shape']), case['input_seed'])
    # Tell a changed random generator apart from a changed model.
    assert x.double().sum().item() == pytest.approx(
        case['input_sum'], abs=1e-6), 'torch.randn changed: remake fixtures'
    with torch.no_grad():
        outs = model(x)
    assert len(outs) == len(case['outputs'])
    for out, expected in zip(outs, case['outputs']):
        assert out.shape == expected.shape
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-4)


# --------------------------------------------------------------------------
# Parameter counts (official classifiers and the official dense L2)
# --------------------------------------------------------------------------
@pytest.mark.parametrize('arch, expected', [
    ('l1', 6_187_560),
    ('l2', 16_275_870),
    ('l3', 27_894_484),
    ('l4', 65_638_204),
])
def test_classifier_parameter_count(arch, expected):
    with torch.device('meta'):
        model = FcaFormer(arch, out_type='avg_featmap')
    dim = model.embed_dims[-1]
    count = sum(p.numel() for p in model.parameters()) + dim * 1000 + 1000
    assert count == expected
    assert round(count / 1e6, 2) == {
        'l1': 6.19, 'l2': 16.28, 'l3': 27.89, 'l4': 65.64
    }[arch]


def test_dense_parameter_count():
    with torch.device('meta'):
        model = FcaFormer('l2')
    count = sum(p.numel() for p in model.parameters())
    assert count == 16_334_390
    assert round(count / 1e6, 2) == 16.33


def test_official_state_dict_layout():
    # Names and shapes of the official models' state dicts, recorded from
    # the official code: an official dense checkpoint loads with
    # strict=True, an official classifier one with only its Linear left.
    official = json.loads(OFFICIAL_KEYS.read_text())
    with torch.device('meta'):
        dense = FcaFormer('l2')
        cls = FcaFormer('l2', out_type='avg_featmap')
    assert {k: list(v.shape) for k, v in dense.state_dict().items()} == \
        official['dense_l2']
    classifier = dict(official['classifier_l2'])
    assert classifier.pop('head.weight') == [1000, 480]
    assert classifier.pop('head.bias') == [1000]
    assert {k: list(v.shape)
            for k, v in cls.state_dict().items()} == classifier


def test_state_dict_names():
    with torch.device('meta'):
        keys = set(FcaFormer('l2').state_dict())
    for key in ('patch_embed.seq.0.c.weight', 'patch_embed.seq.2.bn.bias',
                'layer_0.blocks.1.gamma', 'layer_1.blocks.0.pwconv2.weight',
                'layer_2.downsample.conv2.bn.running_var',
                'layer_2.blocks.0.dw_conv.weight',
                'layer_2.blocks.6.s_token_bias',
                'layer_2.blocks.6.s_scale_factors',
                'layer_2.blocks.3.s_norm.weight',
                'layer_2.blocks.0.attention_biases',
                'layer_3.blocks.1.local_conv.bn.weight',
                'layer_3.blocks.1.mlp.norm.weight', 'head3.weight',
                'norm3.bias'):
        assert key in keys, key
    assert 'layer_3.blocks.1.dw_conv.weight' not in keys
    assert 'layer_2.blocks.0.s_token_bias' not in keys
    assert not any('attention_bias_idxs' in key for key in keys)
    with torch.device('meta'):
        model = FcaFormer('l2')
    assert model.layer_2.blocks[6].s_token_bias.shape == (1, 10, 1, 96)
    assert model.layer_3.blocks[1].s_scale_factors.shape == (1, 4, 1)
    assert model.layer_2.blocks[0].attention_biases.shape == (10, 196)


# --------------------------------------------------------------------------
# Initialisation and checkpoints
# --------------------------------------------------------------------------
def test_default_init():
    model = FcaFormer(TINY, layer_scale_init_value=0.5)
    model.init_weights()
    assert model.is_init
    weight = model.layer_2.blocks[0].qkv.weight
    assert weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert model.layer_2.blocks[0].qkv.bias.abs().sum() == 0
    assert (model.norm0.weight == 1).all() and (model.norm0.bias == 0).all()
    bn = model.patch_embed.seq[0].bn
    assert (bn.weight == 1).all() and (bn.bias == 0).all()
    assert (model.layer_0.blocks[0].gamma == 0.5).all()
    assert (model.layer_2.blocks[1].s_scale_factors == 1).all()


def test_load_official_checkpoint_into_dense(tmp_path, log):
    path = tmp_path / 'fcaformer_l1_official.pth'
    ckpt = write_official_checkpoint(path)
    model = FcaFormer(TINY, init_cfg=dict(type='Pretrained',
                                          checkpoint=str(path)))
    model.init_weights()
    assert_state_equal(model, ckpt['model'])
    text = log.text()
    missing = text.split('Missing keys')[1].split('\n')[0]
    unexpected = text.split('Unexpected keys')[1].split('\n')[0]
    assert set(missing.split(': ', 1)[1].split(', ')) == {
        f'{kind}{i}.{p}'
        for i in range(4)
        for kind, p in (('head', 'weight'), ('norm', 'weight'),
                        ('norm', 'bias'))
    }
    assert set(unexpected.split(': ', 1)[1].split(', ')) == {
        'norm_head.weight', 'norm_head.bias', 'head.weight', 'head.bias'
    }


def test_load_official_checkpoint_ema(tmp_path, log):
    path = tmp_path / 'official.pth'
    ckpt = write_official_checkpoint(path)
    model = FcaFormer(
        TINY,
        out_type='avg_featmap',
        init_cfg=dict(
            type='Pretrained',
            checkpoint=str(path),
            prefix='backbone.',
            state_dict_key='model_ema'))
    model.init_weights()
    assert_state_equal(model, ckpt['model_ema'])
    text = log.text()
    assert 'Missing keys' not in text
    unexpected = text.split('Unexpected keys (ignored): ')[1].split('\n')[0]
    assert set(unexpected.split(', ')) == {'head.weight', 'head.bias'}


def test_load_openmmlab_checkpoint(tmp_path, log):
    state = official_classifier_state(TINY, seed=3)
    mm_state = {f'backbone.{k}': v for k, v in state.items()
                if not k.startswith('head.')}
    mm_state['head.fc.weight'] = state['head.weight']
    mm_state['head.fc.bias'] = state['head.bias']
    path = tmp_path / 'mm.pth'
    torch.save({'meta': {'epoch': 1}, 'state_dict': mm_state}, path)
    for prefix in ('backbone.', None):
        log.messages.clear()
        model = FcaFormer(
            TINY,
            out_type='avg_featmap',
            init_cfg=dict(
                type='Pretrained', checkpoint=str(path), prefix=prefix))
        model.init_weights()
        assert_state_equal(model, mm_state, prefix='backbone.')
        assert 'Missing keys' not in log.text()
        assert 'Unexpected keys' not in log.text()


def test_load_plain_state_dict(tmp_path, log):
    source = FcaFormer(TINY)
    state = seeded_state_dict(shapes_of(source), seed=4)
    path = tmp_path / 'plain.pth'
    torch.save(state, path)
    model = FcaFormer(TINY, init_cfg=dict(type='Pretrained',
                                          checkpoint=str(path)))
    model.init_weights()
    assert_state_equal(model, state)
    assert 'Missing keys' not in log.text()
    # A DistributedDataParallel ``module.`` prefix is removed.
    torch.save({f'module.{k}': v for k, v in state.items()}, path)
    model = FcaFormer(TINY, init_cfg=dict(type='Pretrained',
                                          checkpoint=str(path)))
    model.init_weights()
    assert_state_equal(model, state)


def test_pretrained_runs_official_init_first(tmp_path):
    # Layers that the checkpoint lacks (head{i}) get the official init, not
    # PyTorch's default one.
    path = tmp_path / 'official.pth'
    write_official_checkpoint(path)
    model = FcaFormer(TINY, init_cfg=dict(type='Pretrained',
                                          checkpoint=str(path)))
    model.init_weights()
    assert model.head0.weight.std().item() == pytest.approx(0.02, rel=0.2)


def test_shape_mismatch_is_refused(tmp_path):
    model = FcaFormer(TINY)
    state = seeded_state_dict(shapes_of(model), seed=5)
    state['layer_2.blocks.0.attention_biases'] = torch.zeros(2, 49)
    state['head0.weight'] = torch.zeros(8, 16, 1, 1)
    path = tmp_path / 'bad.pth'
    torch.save({'state_dict': state}, path)
    model = FcaFormer(TINY, init_cfg=dict(type='Pretrained',
                                          checkpoint=str(path)))
    with pytest.raises(RuntimeError) as info:
        model.init_weights()
    message = str(info.value)
    assert 'layer_2.blocks.0.attention_biases: checkpoint (2, 49), model ' \
           '(2, 196)' in message
    assert 'head0.weight: checkpoint (8, 16, 1, 1), model (16, 16, 1, 1)' \
        in message


def test_checkpoint_of_another_arch_is_refused(tmp_path):
    path = tmp_path / 'l1.pth'
    torch.save({'model': official_classifier_state('l1', seed=0)}, path)
    model = FcaFormer(TINY, init_cfg=dict(type='Pretrained',
                                          checkpoint=str(path)))
    with pytest.raises(RuntimeError, match='Shape mismatch'):
        model.init_weights()


def test_missing_checkpoint_file(tmp_path):
    path = tmp_path / 'does_not_exist.pth'
    model = FcaFormer(TINY, init_cfg=dict(type='Pretrained',
                                          checkpoint=str(path)))
    with pytest.raises(FileNotFoundError, match='does_not_exist.pth'):
        model.init_weights()
    with pytest.raises(ValueError, match='checkpoint'):
        FcaFormer(TINY, init_cfg=dict(type='Pretrained')).init_weights()


def test_checkpoint_without_model_keys(tmp_path):
    path = tmp_path / 'other.pth'
    torch.save({'state_dict': {'decode_head.conv.weight': torch.zeros(1)}},
               path)
    model = FcaFormer(TINY, init_cfg=dict(type='Pretrained',
                                          checkpoint=str(path)))
    with pytest.raises(RuntimeError, match='No key of .* belongs'):
        model.init_weights()
    path = tmp_path / 'official.pth'
    write_official_checkpoint(path)
    model = FcaFormer(
        TINY,
        init_cfg=dict(
            type='Pretrained', checkpoint=str(path), state_dict_key='ema'))
    with pytest.raises(KeyError, match="no entry 'ema'.*model_ema"):
        model.init_weights()


def test_pretrained_inside_a_parent_module(tmp_path):
    source = FcaFormer(TINY)
    state = seeded_state_dict(shapes_of(source), seed=6)
    path = tmp_path / 'mm.pth'
    torch.save({'state_dict': {f'backbone.{k}': v
                               for k, v in state.items()}}, path)

    class Parent(BaseModule):

        def __init__(self):
            super().__init__()
            self.backbone = FcaFormer(
                TINY,
                init_cfg=dict(
                    type='Pretrained',
                    checkpoint=str(path),
                    prefix='backbone.'))
            self.fc = nn.Linear(4, 4)

    parent = Parent()
    parent.init_weights()
    assert parent.backbone.is_init
    assert_state_equal(parent.backbone, state)


def test_unknown_pretrained_keys():
    model = FcaFormer(
        TINY, init_cfg=dict(type='Pretrained', checkpoint='x', key='model'))
    with pytest.raises(ValueError, match=r"Unknown keys \['key'\]"):
        model.init_weights()


def test_other_init_cfg_goes_through_mmengine():
    model = FcaFormer(
        TINY,
        init_cfg=dict(type='Constant', layer='Linear', val=0.25, bias=0.))
    model.init_weights()
    assert (model.layer_2.blocks[0].qkv.weight == 0.25).all()


# --------------------------------------------------------------------------
# Layer-wise learning-rate decay
# --------------------------------------------------------------------------
@pytest.fixture(scope='module')
def meta_l2() -> FcaFormer:
    with torch.device('meta'):
        return FcaFormer('l2')


@pytest.mark.parametrize('name, layer_id', [
    ('patch_embed.seq.0.c.weight', 0),
    ('layer_0.downsample.conv1.c.weight', 0),
    ('layer_0.blocks.1.dwconv.weight', 1),
    ('layer_1.blocks.0.gamma', 2),
    ('layer_1.downsample.conv3.bn.weight', 2),
    ('layer_2.blocks.0.qkv.weight', 3),
    ('layer_2.blocks.2.mlp.fc1.bias', 3),
    ('layer_2.blocks.3.attention_biases', 4),
    ('layer_2.blocks.6.norm2.weight', 5),
    ('layer_2.blocks.4.s_scale_factors', 0),
    ('layer_2.blocks.4.s_token_bias', 0),
    ('layer_3.blocks.1.s_token_bias', 0),
    ('layer_2.blocks.5.s_norm.weight', 4),
    ('layer_2.downsample.conv2.c.weight', 3),
    ('layer_3.blocks.1.proj.weight', 6),
    ('head0.weight', 7),
    ('norm3.bias', 7),
])
def test_get_layer_depth_l2(name, layer_id, meta_l2):
    model = meta_l2
    assert model.num_decay_layers == 6
    assert model.get_layer_depth(name) == (layer_id, 8)
    assert model.get_layer_depth('backbone.' + name,
                                 prefix='backbone.') == (layer_id, 8)


def test_get_layer_depth_other_archs():
    with torch.device('meta'):
        model = FcaFormer('l3', out_type='avg_featmap')
    assert model.num_decay_layers == 7
    assert model.get_layer_depth('layer_2.blocks.11.qkv.weight') == (6, 9)
    assert model.get_layer_depth('layer_3.blocks.0.qkv.weight') == (7, 9)
    assert model.get_layer_depth('norm_head.weight') == (8, 9)
    # Parameters outside the backbone (the classifier head) come last.
    assert model.get_layer_depth('head.fc.weight', 'backbone.') == (8, 9)
    assert FcaFormer('l1').num_decay_layers == 5
    # Every parameter gets an id in range.
    for name, _ in model.named_parameters():
        layer_id, count = model.get_layer_depth(name)
        assert 0 <= layer_id < count
