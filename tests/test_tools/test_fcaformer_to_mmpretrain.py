"""Tests of tools/model_converters/fcaformer_to_mmpretrain.py."""
from __future__ import annotations

import argparse
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fcaformer_mm.models.backbones.fcaformer import FcaFormer
from fcaformer_mm.utils import converter as tool

ROOT = Path(__file__).parents[2]
TOOL = ROOT / 'tools' / 'model_converters' / 'fcaformer_to_mmpretrain.py'
TINY = dict(embed_dims=[16, 32, 32, 48], depths=[1, 2, 3, 2], num_heads=[2, 3])




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


def test_refuses_payload_checkpoints(payload, tmp_path):
    """A source that would run code when unpickled, local or by URL."""
    url, path, marker = payload
    for src in (str(path), url):
        with pytest.raises(SystemExit, match=r'Refused.*`posix\.system`'):
            tool.main([src, str(tmp_path / 'out.pth')])
    assert not marker.exists()
    assert not (tmp_path / 'out.pth').exists()


def test_converts_from_a_url(official, file_server, tmp_path):
    src, _ = official
    (file_server.root / 'official.pth').write_bytes(src.read_bytes())
    dst = tmp_path / 'from_url.pth'
    assert tool.main([file_server.url('official.pth'), str(dst)]) == 0
    assert 'head.fc.weight' in read(dst)['state_dict']


def test_sources_that_are_not_checkpoints(tmp_path):
    text = tmp_path / 'notes.txt'
    text.write_text('these are not weights\n')
    empty = tmp_path / 'empty.pth'
    empty.write_bytes(b'')
    folder = tmp_path / 'folder'
    folder.mkdir()
    for src, expected in ((text, 'is a text file'),
                          (empty, r'is empty \(0 bytes\)'),
                          (folder, 'is a directory')):
        with pytest.raises(SystemExit, match=expected) as info:
            tool.main([str(src), str(tmp_path / 'o.pth')])
        assert str(src) in str(info.value.code)


def test_destination_directory_is_refused(official, tmp_path):
    src, _ = official
    folder = tmp_path / 'models'
    folder.mkdir()
    for extra in ([], ['--force']):
        with pytest.raises(SystemExit,
                           match=r'is a directory; give the path of the '
                           r'file to write, e\.g\. \S+models'):
            tool.main([str(src), str(folder)] + extra)
    assert folder.is_dir() and not any(folder.iterdir())


@pytest.mark.parametrize('umask', [0o022, 0o027])
def test_output_follows_the_umask(official, tmp_path, umask):
    src, _ = official
    dst = tmp_path / 'converted.pth'
    old = os.umask(umask)
    try:
        tool.main([str(src), str(dst)])
    finally:
        os.umask(old)
    assert stat.S_IMODE(dst.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()
            if p.name.endswith('.part')] == []


def test_weights_that_do_not_fit_are_refused(official, tmp_path, capsys):
    src, ckpt = official
    weights = dict(ckpt['model'])
    del weights['layer_2.blocks.1.s_token_bias']
    del weights['head.bias']
    partial = tmp_path / 'partial.pth'
    torch.save({'model': weights}, partial)
    dst = tmp_path / 'o.pth'
    with pytest.raises(SystemExit) as info:
        tool.main([str(partial), str(dst)])
    message = str(info.value.code)
    assert 'does not fit' in message and '--allow-partial' in message
    assert 'backbone.layer_2.blocks.1.s_token_bias' in message
    assert 'head.fc.bias' in message
    assert not dst.exists()
    assert tool.main([str(partial), str(dst), '--allow-partial']) == 0
    assert 'warning: 2 weights are missing' in capsys.readouterr().err
    # A weight of another shape is never converted.
    weights = dict(ckpt['model'])
    weights['layer_3.blocks.0.proj.weight'] = torch.zeros(48, 16)
    torch.save({'model': weights}, partial)
    with pytest.raises(SystemExit, match='another shape'):
        tool.main([str(partial), str(tmp_path / 'o2.pth'),
                   '--allow-partial'])


def test_never_replaces_the_source_by_another_path(official, tmp_path):
    """``dir/src.pth dirlink/src.pth --force`` with ``dirlink -> dir``, a
    symbolic or a hard link to SRC: the same file, refused by identity."""
    src, _ = official
    original = src.read_bytes()
    (tmp_path / 'dirlink').symlink_to(tmp_path)
    (tmp_path / 'link.pth').symlink_to(src)
    os.link(src, tmp_path / 'hard.pth')
    for dst in (tmp_path / 'dirlink' / src.name, tmp_path / 'link.pth',
                tmp_path / 'hard.pth'):
        with pytest.raises(SystemExit,
                           match='same file as SRC.*Give another DST'):
            tool.main([str(src), str(dst), '--force'])
    assert src.read_bytes() == original
    assert (tmp_path / 'link.pth').is_symlink()


def test_deployed_weights_are_refused(tmp_path):
    """Weights of a deployed model (folded Conv-BN: ``...c.bias``) cannot
    be unfolded; the converter says so and writes nothing."""
    model = FcaFormer(TINY, out_type='avg_featmap').eval()
    deployed = dict(model.switch_to_deploy().state_dict())
    deployed['head.weight'] = torch.randn(7, 48)
    deployed['head.bias'] = torch.randn(7)
    src = tmp_path / 'deployed.pth'
    torch.save({'model': deployed}, src)
    with pytest.raises(SystemExit, match='deployed FcaFormer weights'):
        tool.main([str(src), str(tmp_path / 'o.pth')])
    assert not (tmp_path / 'o.pth').exists()
