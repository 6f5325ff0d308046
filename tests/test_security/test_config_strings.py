"""No tool or API of the package runs a config string of a checkpoint.

mmengine executes ``meta['config']`` in ``Runner.resume`` and ``meta['cfg']``
(or ``message_hub.runtime_info.cfg``) in ``BaseInferencer(model=None)``,
through ``Config.fromstring(..., '.py')``. Each checkpoint here holds, in all
three places, a config that writes a marker file when executed.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from fcaformer_mm import compat
from fcaformer_mm.models.backbones.fcaformer import FcaFormer

from .conftest import make_runner
from .forge import config_payload


def _with_payloads(real: Path, dst: Path, marker: Path) -> Path:
    """``real`` with the marker config in every field mmengine executes."""
    checkpoint = compat.load_checkpoint_file(str(real), 'cpu')
    code = config_payload(marker)
    checkpoint['meta']['config'] = code
    checkpoint['meta']['cfg'] = code
    checkpoint['message_hub'].setdefault('runtime_info', {})['cfg'] = code
    torch.save(checkpoint, dst)
    return dst


def test_the_payload_runs_when_mmengine_executes_it(tmp_path):
    """The payload is real: ``Config.fromstring`` runs it."""
    marker = tmp_path / 'ran'
    Config.fromstring(config_payload(marker), file_format='.py')
    assert marker.read_text() == 'ran'


@pytest.mark.parametrize('where', ['path', 'url'])
def test_resume_drops_meta_config_and_resumes(real_checkpoint, tmp_path,
                                              file_server, capsys, where):
    marker = tmp_path / 'ran'
    ckpt = _with_payloads(real_checkpoint, file_server.root / 'iter_2.pth',
                          marker)
    source = file_server.url('iter_2.pth') if where == 'url' else str(ckpt)
    runner = make_runner(tmp_path / 'run', max_iters=4, resume=True,
                         load_from=source)
    runner.train()
    assert runner.iter == 4
    assert len(runner.message_hub.get_scalar('train/loss').data[0]) == 4
    assert not marker.exists()
    log = capsys.readouterr().out
    assert "fcaformer_mm dropped meta['config']" in log
    assert 'resumed epoch: 0, iter: 2' in log


def test_loaded_checkpoint_keeps_meta_cfg(real_checkpoint, tmp_path):
    """``meta['cfg']`` stays (only BaseInferencer with model=None runs it);
    ``meta['config']`` is gone."""
    ckpt = _with_payloads(real_checkpoint, tmp_path / 'c.pth',
                          tmp_path / 'ran')
    loaded = compat.load_checkpoint_file(str(ckpt))
    assert 'config' not in loaded['meta'] and 'cfg' in loaded['meta']


@pytest.mark.parametrize('name', ['upernet_fcaformer_l2_ade20k'])
def test_get_inferencer_never_runs_checkpoint_config(real_checkpoint,
                                                     tmp_path, name):
    """MMSegInferencer goes through mmengine's BaseInferencer, which runs
    the checkpoint's config when no model config is given."""
    from fcaformer_mm.apis import get_inferencer
    marker = tmp_path / 'ran'
    ckpt = _with_payloads(real_checkpoint, tmp_path / 'c.pth', marker)
    inferencer = get_inferencer(name, weights=str(ckpt), device='cpu')
    assert inferencer.model is not None
    assert not marker.exists()


def test_converter_and_export_loader_never_run_checkpoint_config(tmp_path):
    from fcaformer_mm.utils import converter
    from fcaformer_mm.utils.checkpoint_check import load_fitting_weights
    marker = tmp_path / 'ran'
    tiny = dict(embed_dims=[16, 32, 32, 48], depths=[1, 2, 3, 2],
                num_heads=[2, 3])
    model = FcaFormer(tiny, out_type='avg_featmap')
    code = config_payload(marker)
    src = tmp_path / 'official.pth'
    weights = dict(model.state_dict(), **{
        'head.weight': torch.zeros(7, 48), 'head.bias': torch.zeros(7)})
    torch.save({'model': weights, 'epoch': 1,
                'args': argparse.Namespace(model='fcaformer_l2'),
                'meta': {'config': code, 'cfg': code}}, src)
    converter.main([str(src), str(tmp_path / 'converted.pth')])
    assert (tmp_path / 'converted.pth').is_file()
    load_fitting_weights(FcaFormer(tiny, out_type='avg_featmap'), str(src),
                         allow_partial=True)
    assert not marker.exists()
