"""Tests of tools/model_converters/fcaformer_to_mmpretrain.py."""
from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fcaformer_mm.models.backbones.fcaformer import FcaFormer

ROOT = Path(__file__).parents[2]
TOOL = ROOT / 'tools' / 'model_converters' / 'fcaformer_to_mmpretrain.py'
TINY = dict(embed_dims=[16, 32, 32, 48], depths=[1, 2, 3, 2], num_heads=[2, 3])


def load_tool():
    spec = importlib.util.spec_from_file_location('fcaformer_to_mmpretrain',
                                                  TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = load_tool()


def classifier_state(seed: int, num_classes: int = 7) -> dict:
    """Random weights in the layout of the official classifier."""
    torch.manual_seed(seed)
    model = FcaFormer(TINY, out_type='avg_featmap')
    state = {k: torch.randn(v.shape) if v.is_floating_point() else v
             for k, v in model.state_dict().items()}
    for key in state:
        if key.endswith('running_var'):
            state[key] = state[key].abs() + 0.5
    state['head.weight'] = torch.randn(num_classes, 48)
    state['head.bias'] = torch.randn(num_classes)
    return state


@pytest.fixture
def official(tmp_path) -> tuple[Path, dict]:
    ckpt = {
        'model': classifier_state(0),
        'model_ema': classifier_state(1),
        'optimizer': {'state': {}, 'param_groups': []},
        'epoch': 299,
        'args': argparse.Namespace(model='fcaformer_l2'),
    }
    path = tmp_path / 'official.pth'
    torch.save(ckpt, path)
    return path, ckpt


def read(path: Path) -> dict:
    return torch.load(path, map_location='cpu', weights_only=True)


def test_convert_and_load(official, tmp_path):
    src, ckpt = official
    dst = tmp_path / 'out' / 'converted.pth'
    assert tool.main([str(src), str(dst)]) == 0
    out = read(dst)
    assert set(out) == {'state_dict', 'meta'}
    state = out['state_dict']
    assert all(k.startswith(('backbone.', 'head.fc.')) for k in state)
    assert set(k for k in state if k.startswith('head.')) == {
        'head.fc.weight', 'head.fc.bias'
    }
    torch.testing.assert_close(state['head.fc.weight'],
                               ckpt['model']['head.weight'])
    assert out['meta']['state_dict_key'] == 'model'
    assert out['meta']['num_classes'] == 7
    assert out['meta']['epoch'] == 299
    assert out['meta']['arch'] is None  # a custom arch

    # The converted file loads into the classification backbone with
    # nothing missing and nothing unexpected, and gives the same features
    # as the official file.
    model = FcaFormer(
        TINY,
        out_type='avg_featmap',
        init_cfg=dict(
            type='Pretrained', checkpoint=str(dst), prefix='backbone.'))
    model.init_weights()
    reference = FcaFormer(
        TINY,
        out_type='avg_featmap',
        init_cfg=dict(type='Pretrained', checkpoint=str(src)))
    reference.init_weights()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(
            model.eval()(x)[0], reference.eval()(x)[0], rtol=0, atol=0)
    own = set(model.state_dict())
    assert own == {k[len('backbone.'):] for k in state
                   if k.startswith('backbone.')}


def test_ema(official, tmp_path):
    src, ckpt = official
    dst = tmp_path / 'ema.pth'
    tool.main([str(src), str(dst), '--ema'])
    out = read(dst)
    assert out['meta']['state_dict_key'] == 'model_ema'
    torch.testing.assert_close(
        out['state_dict']['backbone.layer_2.blocks.1.s_token_bias'],
        ckpt['model_ema']['layer_2.blocks.1.s_token_bias'])


def test_refuses_to_overwrite(official, tmp_path):
    src, _ = official
    dst = tmp_path / 'exists.pth'
    dst.write_bytes(b'keep me')
    with pytest.raises(SystemExit, match='exists; pass --force'):
        tool.main([str(src), str(dst)])
    assert dst.read_bytes() == b'keep me'
    tool.main([str(src), str(dst), '--force'])
    assert 'state_dict' in read(dst)


def test_clear_errors(official, tmp_path):
    src, ckpt = official
    with pytest.raises(SystemExit, match='does not exist'):
        tool.main([str(tmp_path / 'missing.pth'), str(tmp_path / 'o.pth')])

    no_ema = tmp_path / 'no_ema.pth'
    torch.save({'model': ckpt['model'], 'epoch': 1}, no_ema)
    with pytest.raises(SystemExit, match="no 'model_ema' entry.*drop --ema"):
        tool.main([str(no_ema), str(tmp_path / 'o.pth'), '--ema'])

    mm = tmp_path / 'mm.pth'
    torch.save({'state_dict': {}, 'meta': {}}, mm)
    with pytest.raises(SystemExit, match='already in the OpenMMLab layout'):
        tool.main([str(mm), str(tmp_path / 'o.pth')])

    other = tmp_path / 'other.pth'
    torch.save({'model': {'fc.weight': torch.zeros(2, 2)}}, other)
    with pytest.raises(SystemExit, match='no FcaFormer weights'):
        tool.main([str(other), str(tmp_path / 'o.pth')])

    with pytest.raises(SystemExit, match='same file'):
        tool.main([str(src), str(src), '--force'])
    assert not (tmp_path / 'o.pth').exists()


def test_detect_arch():
    for arch in ('l1', 'l2', 'l3', 'l4'):
        with torch.device('meta'):
            state = FcaFormer(arch, out_type='avg_featmap').state_dict()
        assert tool.detect_arch(state) == f'fcaformer-{arch}'


def test_runs_as_a_script(official, tmp_path):
    src, _ = official
    dst = tmp_path / 'script.pth'
    result = subprocess.run(
        [sys.executable, str(TOOL), str(src), str(dst)],
        capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert 'Converted' in result.stdout
    result = subprocess.run(
        [sys.executable, str(TOOL), str(src), str(dst)],
        capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert 'pass --force' in result.stderr
