"""fcaformer_mm.utils.checkpoint_check: does a checkpoint fit a model?
And the one ``select_state_dict`` that it shares with the backbone and the
converter."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from fcaformer_mm.compat import CheckpointError
from fcaformer_mm.models.utils.checkpoint import (
    StateDictError,
    select_state_dict,
)
from fcaformer_mm.utils.checkpoint_check import (
    CheckpointFitError,
    check_fit,
    ensure_fit,
    load_fitting_weights,
)


class Detector(nn.Module):
    """Parts named as in the OpenMMLab models."""

    def __init__(self, classes: int = 3):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.neck = nn.Conv2d(4, 4, 1)
        self.roi_head = nn.Linear(4, classes)
        self.extra = nn.Linear(2, 2)  # neither backbone, neck nor head


def test_fitting_checkpoint_with_ema_copies():
    model = Detector()
    state = {k: v.clone() for k, v in model.state_dict().items()
             if not k.endswith('num_batches_tracked')}
    state['ema_backbone_0_weight'] = torch.zeros(1)  # mmcv 1.x EMAHook
    state['steps'] = torch.tensor(3)
    fit = ensure_fit(model, state, 'ckpt.pth')
    assert fit.complete and not fit.missing and not fit.unexpected
    assert 'ema_backbone_0_weight' in fit.harmless
    assert 'backbone.1.num_batches_tracked' in fit.harmless


def test_checkpoint_of_another_model_is_refused():
    model = Detector(classes=3)
    other = Detector(classes=5).state_dict()
    other.pop('neck.weight')
    other['mask_head.weight'] = torch.zeros(1)
    with pytest.raises(CheckpointFitError) as info:
        ensure_fit(model, other, 'other.pth')
    message = str(info.value)
    assert 'other.pth does not fit Detector' in message
    assert 'roi_head.weight: checkpoint (5, 4), model (3, 4)' in message
    assert 'missing keys' in message and 'neck.weight' in message
    assert 'unexpected keys' in message and 'mask_head.weight' in message
    # Shapes that differ are never accepted, not even as a partial load.
    with pytest.raises(CheckpointFitError, match='another shape'):
        ensure_fit(model, other, 'other.pth', allow_partial=True)


def test_missing_parts_and_partial_loads():
    model = Detector()
    state = {k: v for k, v in model.state_dict().items()
             if not k.startswith('roi_head.')}
    with pytest.raises(CheckpointFitError,
                       match=r'2 weights of the backbone, neck or heads are '
                       r'missing[\s\S]*pass --allow-partial'):
        ensure_fit(model, state, 'backbone_only.pth')
    fit = ensure_fit(model, state, 'backbone_only.pth', allow_partial=True)
    assert fit.missing == ['roi_head.weight', 'roi_head.bias']
    # Weights outside backbone, neck and heads may be missing.
    state = {k: v for k, v in model.state_dict().items()
             if not k.startswith('extra.')}
    assert ensure_fit(model, state, 'x.pth').missing == [
        'extra.weight', 'extra.bias']
    # Nothing of the model: refused even as a partial load.
    with pytest.raises(CheckpointFitError, match='no weight of the model'):
        ensure_fit(model, {'fc.weight': torch.zeros(1)}, 'x.pth',
                   allow_partial=True)


def test_bare_backbone_needs_every_weight():
    backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 1))
    state = backbone.state_dict()
    state.pop('1.bias')
    fit = check_fit(backbone, state)
    assert fit.required_missing == ['1.bias'] and not fit.complete


def test_select_state_dict():
    weights = {'module.a': torch.zeros(1), 'b': torch.ones(1), 'n': 3}
    assert set(select_state_dict({'state_dict': weights, 'meta': {}})) == {
        'a', 'b'}
    assert set(select_state_dict({'model': weights, 'epoch': 3})) == {
        'a', 'b'}
    # As mmengine's Runner: no 'model' entry, so the checkpoint itself.
    assert select_state_dict({'model': weights}, entries=('state_dict', ),
                             source='x.pth') == {}
    assert set(select_state_dict({'model_ema': weights, 'model': {}},
                                 'model_ema')) == {'a', 'b'}
    with pytest.raises(KeyError, match="no entry 'ema'.*'model'"):
        select_state_dict({'model': weights}, 'ema')
    with pytest.raises(StateDictError,
                       match='x.pth holds an object of type list'):
        select_state_dict([1, 2], source='x.pth')
    with pytest.raises(CheckpointError, match='is of type int, not a dict'):
        select_state_dict({'state_dict': 1})


def test_load_fitting_weights(tmp_path):
    model = Detector()
    source = Detector()
    path = tmp_path / 'whole.pth'
    torch.save({'state_dict': source.state_dict()}, path)
    load_fitting_weights(model, str(path))
    torch.testing.assert_close(model.neck.weight, source.neck.weight)
    # A whole model's checkpoint into its backbone.
    backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    load_fitting_weights(backbone, str(path))
    torch.testing.assert_close(backbone[0].weight, source.backbone[0].weight)
    # An official (timm-style) checkpoint: weights under 'model'.
    official = tmp_path / 'official.pth'
    torch.save({'model': backbone.state_dict(), 'epoch': 1}, official)
    load_fitting_weights(nn.Sequential(nn.Conv2d(3, 4, 3),
                                       nn.BatchNorm2d(4)), str(official))
    with pytest.raises(CheckpointFitError, match='no weight of the model'):
        load_fitting_weights(nn.Linear(7, 7), str(path))


def test_deployed_fcaformer_weights_are_refused():
    from fcaformer_mm.models.backbones.fcaformer import FcaFormer
    arch = dict(embed_dims=[8, 16, 16, 24], depths=[1, 1, 2, 1],
                num_heads=[2, 2])
    model = FcaFormer(arch)
    deployed = FcaFormer(arch).eval().switch_to_deploy().state_dict()
    with pytest.raises(CheckpointFitError, match='deployed FcaFormer'):
        ensure_fit(model, deployed, 'deployed.pth', allow_partial=True)
    # The undeployed layout of the same model fits.
    ensure_fit(model, FcaFormer(arch).state_dict(), 'plain.pth')
