"""Deploying is safe, and FcaFormer holds no state that a context can
spoil: a deployed model refuses training and deployed weights are refused
by every loader; folding is all or nothing; index buffers are real tensors
whatever the device or mode the model was built or first run in."""
from __future__ import annotations

import copy

import pytest
import torch
from test_fcaformer import TINY, seeded_input

from fcaformer_mm.analysis.seeded import seeded_model
from fcaformer_mm.models.backbones.fcaformer import FcaFormer
from fcaformer_mm.models.utils.checkpoint import is_deployed_state_dict


def infer(model, x):
    with torch.no_grad():
        return model(x)


def test_deployed_model_refuses_training():
    model = seeded_model(TINY).switch_to_deploy()
    with pytest.raises(RuntimeError, match=r'deploy a copy .*deepcopy'):
        model.train()
    assert not model.training
    model.training = True  # set by hand, past train()
    with pytest.raises(RuntimeError, match='cannot be trained'):
        model(seeded_input((1, 3, 32, 32), seed=1))
    model.eval()  # eval stays allowed
    infer(model, seeded_input((1, 3, 32, 32), seed=1))


def test_deployed_weights_are_refused_by_loaders(tmp_path):
    deployed = seeded_model(TINY).switch_to_deploy().state_dict()
    assert is_deployed_state_dict(deployed)
    assert not is_deployed_state_dict(seeded_model(TINY).state_dict())
    with pytest.raises(RuntimeError, match='deployed FcaFormer'):
        FcaFormer(TINY).load_state_dict(deployed, strict=False)
    path = tmp_path / 'deployed.pth'
    torch.save({'state_dict': {f'backbone.{k}': v
                               for k, v in deployed.items()}}, path)
    model = FcaFormer(TINY, init_cfg=dict(
        type='Pretrained', checkpoint=str(path), prefix='backbone.'))
    with pytest.raises(RuntimeError, match=r'deployed\.pth holds the '
                       'weights of a deployed FcaFormer'):
        model.init_weights()


def test_fold_is_all_or_nothing_with_a_parametrized_layer():
    parametrize = torch.nn.utils.parametrize

    class Double(torch.nn.Module):
        def forward(self, x):
            return 2 * x

    model = seeded_model(TINY)
    x = seeded_input((1, 3, 40, 40), seed=2)
    parametrize.register_parametrization(model.layer_2.blocks[1],
                                         'gamma_2', Double())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    expected = infer(model, x)
    with pytest.raises(RuntimeError, match='parametrized.*Nothing was'):
        model.switch_to_deploy()
    assert not model.deployed
    after = model.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    for a, b in zip(infer(model, x), expected):
        assert torch.equal(a, b)


def test_meta_built_model_loads_and_traces():
    reference = seeded_model(TINY)
    with torch.device('meta'):
        model = FcaFormer(TINY)
    # A later model built normally is not affected by the meta one.
    FcaFormer(TINY).to('cpu')
    model.to_empty(device='cpu')
    model.load_state_dict(reference.state_dict())
    model.eval()
    x = seeded_input((1, 3, 40, 40), seed=3)
    traced = torch.jit.trace(model, x, check_trace=False)
    for a, b in zip(traced(x), infer(reference, x)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_inference_mode_forward_then_training_step():
    model = seeded_model(TINY)
    x = seeded_input((2, 3, 40, 40), seed=4)
    with torch.inference_mode():
        model(x)
    model.train()
    sum(o.mean() for o in model(x)).backward()
    assert model.layer_2.blocks[1].attention_biases.grad is not None
    # A model built under inference mode gets a normal index too.
    with torch.inference_mode():
        built = FcaFormer(TINY)
    assert not built.layer_2.blocks[0].attention_bias_idxs.is_inference()


def test_empty_batch_is_a_clear_error():
    model = seeded_model(TINY)
    with pytest.raises(ValueError, match='empty batch'):
        infer(model, torch.zeros(0, 3, 32, 32))


def test_deploy_a_copy_then_train_the_original():
    model = seeded_model(TINY)
    deployed = copy.deepcopy(model).switch_to_deploy()
    model.train()
    sum(o.mean() for o in model(seeded_input((2, 3, 32, 32), seed=5))
        ).backward()
    assert deployed.deployed and not model.deployed
