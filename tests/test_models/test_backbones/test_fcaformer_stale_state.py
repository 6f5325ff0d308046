"""Nothing FcaFormer computes can go stale: weights changed in any way,
``.data`` copies included, show in the next forward; loading into a
deployed model is refused."""
from __future__ import annotations

import copy

import pytest
import torch
from test_fcaformer import TINY, seeded_input

from fcaformer_mm.analysis.seeded import seeded_model as shared_seeded_model
from fcaformer_mm.models.backbones.fcaformer import FcaFormer


def seeded_model(seed: int, **kwargs) -> FcaFormer:
    return shared_seeded_model(TINY, jitter_seed=seed, **kwargs)


def infer(model, x):
    with torch.no_grad():
        return model(x)


def swap_data(a: torch.nn.Module, b: torch.nn.Module) -> None:
    """Swap every parameter and buffer of ``a`` and ``b`` through ``.data``,
    as mmengine's ``EMAHook`` does (no version counter is bumped)."""
    pairs = list(zip(a.parameters(), b.parameters())) + list(
        zip(a.buffers(), b.buffers()))
    for x, y in pairs:
        tmp = x.data.clone()
        x.data.copy_(y.data)
        y.data.copy_(tmp)


def assert_same(outs, expected, atol=1e-5):
    assert len(outs) == len(expected)
    for out, exp in zip(outs, expected):
        torch.testing.assert_close(out, exp, rtol=0, atol=atol)


@pytest.mark.parametrize('out_type', ['featmap', 'avg_featmap'])
def test_ema_style_data_swap_in_eval_mode(out_type):
    x = seeded_input((2, 3, 61, 75), seed=31)
    model, other = seeded_model(3, out_type=out_type), seeded_model(
        4, out_type=out_type)
    own = infer(model, x)
    expected = infer(copy.deepcopy(other), x)
    assert not torch.allclose(own[0], expected[0])

    swap_data(model, other)  # "before_val_epoch": the EMA weights in
    assert_same(infer(model, x), expected)
    model.train()
    model.eval()
    assert_same(infer(model, x), expected)
    swap_data(model, other)  # "after_val_epoch": the origin weights back
    assert_same(infer(model, x), own)


def test_bn_statistics_and_layer_scales_through_data():
    """The quantities that inference folds (BatchNorm statistics, layer
    scales, position biases) changed through ``.data`` between forwards."""
    x = seeded_input((1, 3, 64, 64), seed=32)
    model = seeded_model(3)
    infer(model, x)
    for name, tensor in list(model.named_parameters()) + list(
            model.named_buffers()):
        if name.endswith(('running_var', 'gamma', 'gamma_1', 'gamma_2',
                          'attention_biases', 's_token_bias')):
            tensor.data.mul_(1.7)
    fresh = copy.deepcopy(model)
    expected = infer(fresh, x)
    assert_same(infer(model, x), expected)


def test_loading_after_deploy_is_refused(tmp_path):
    model = seeded_model(3).switch_to_deploy()
    state = seeded_model(4).state_dict()
    with pytest.raises(RuntimeError, match='Load the weights .* first, then '
                       r'call switch_to_deploy\(\)'):
        model.load_state_dict(state)
    # Also the deployed layout itself, and through a parent module.
    with pytest.raises(RuntimeError, match='deployed FcaFormer'):
        model.load_state_dict(model.state_dict())
    parent = torch.nn.Sequential(model)
    with pytest.raises(RuntimeError, match='deployed FcaFormer'):
        parent.load_state_dict({'0.' + k: v for k, v in state.items()},
                               strict=False)
    # ... and through init_cfg Pretrained.
    path = tmp_path / 'plain.pth'
    torch.save(state, path)
    model.init_cfg = dict(type='Pretrained', checkpoint=str(path))
    model._is_init = False
    with pytest.raises(RuntimeError, match='deployed FcaFormer'):
        model.init_weights()
    # Loading first, then deploying, works.
    fresh = FcaFormer(TINY).eval()
    fresh.load_state_dict(state)
    expected = infer(fresh, seeded_input((1, 3, 64, 64), seed=33))
    fresh.switch_to_deploy()
    assert_same(infer(fresh, seeded_input((1, 3, 64, 64), seed=33)),
                expected)
