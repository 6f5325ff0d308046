"""FcaFormer under a real mmengine Runner: testing deploys the backbone
once the checkpoint is loaded (unless an EMAHook swaps weights; another
weight-swapping hook is refused), and an EMA
hook that validates both the EMA and the original weights reports the
metrics of the weights it says."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn

import fcaformer_mm  # noqa: F401
from fcaformer_mm.engine.hooks import SwitchToDeployHook
from fcaformer_mm.engine.hooks.deploy_hook import DeployError
from fcaformer_mm.models.backbones.fcaformer import FcaFormer

TINY = dict(embed_dims=[16, 32, 32, 48], depths=[1, 2, 3, 2], num_heads=[2, 3])


class _Regressor(BaseModel):
    """FcaFormer features, a linear layer, a regression loss."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = FcaFormer(TINY, out_type='avg_featmap',
                                  layer_scale_init_value=1.0)
        self.head = nn.Linear(TINY['embed_dims'][-1], 1)

    def forward(self, inputs, targets=None, mode='tensor'):
        out = self.head(self.backbone(inputs)[0]).squeeze(1)
        if mode == 'loss':
            return {'loss': ((out - targets)**2).mean()}
        return [dict(pred=p) for p in out]


class _Images(torch.utils.data.Dataset):

    def __len__(self) -> int:
        return 8

    def __getitem__(self, idx):
        gen = torch.Generator().manual_seed(idx)
        x = torch.randn(3, 40, 48, generator=gen)
        return dict(inputs=x, targets=x.mean() * 10)


class _MeanPrediction(BaseMetric):
    """The mean prediction: continuous, so any change of weights shows.
    Every evaluation is kept in ``history``."""

    def __init__(self) -> None:
        super().__init__()
        self.history: list[float] = []

    def process(self, data_batch, data_samples) -> None:
        self.results.extend(float(s['pred']) for s in data_samples)

    def compute_metrics(self, results) -> dict:
        value = sum(results) / len(results)
        self.history.append(value)
        return dict(mean_pred=value)


def _loader() -> dict:
    return dict(dataset=_Images(), batch_size=4,
                sampler=dict(type='DefaultSampler', shuffle=False),
                collate_fn=dict(type='default_collate'))


def _runner(work_dir: Path, metric: _MeanPrediction, **kwargs) -> Runner:
    torch.manual_seed(0)
    # A name of its own: runners built within one second would otherwise
    # share the DefaultScope instance named after the timestamp (and so the
    # first runner's scope).
    return Runner(
        model=_Regressor(), work_dir=str(work_dir),
        experiment_name=f'{work_dir.name}_{id(metric)}',
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1)),
        randomness=dict(seed=0), **kwargs)


def _evaluate(model: nn.Module) -> float:
    """The metric of ``model`` computed outside any runner and hook."""
    model.eval()
    preds = []
    with torch.no_grad():
        for idx in range(len(_Images())):
            data = _Images()[idx]
            preds.append(float(model(data['inputs'][None])[0]['pred']))
    return sum(preds) / len(preds)


@pytest.mark.parametrize('with_ema', [False, True])
def test_testing_deploys_after_loading_unless_weights_swap(
        tmp_path, with_ema):
    metric = _MeanPrediction()
    hooks = [dict(type='EMAHook')] if with_ema else []
    runner = _runner(tmp_path, metric, test_dataloader=_loader(),
                     test_cfg=dict(), test_evaluator=[metric],
                     custom_hooks=hooks, default_scope='mmengine')
    reference = copy.deepcopy(runner.model)
    runner.register_hook(SwitchToDeployHook())
    runner.test()
    assert runner.model.backbone.deployed is not with_ema
    # The same numbers as the undeployed model (the EMA copy starts equal).
    assert metric.history[-1] == pytest.approx(_evaluate(reference),
                                               abs=1e-5)


class _AveragedWeightsEMAHook(Hook):
    """A weight-swapping hook by its name that is not an ``EMAHook``."""


def test_deploy_refuses_other_weight_swapping_hooks(tmp_path):
    metric = _MeanPrediction()
    runner = _runner(tmp_path, metric, test_dataloader=_loader(),
                     test_cfg=dict(), test_evaluator=[metric],
                     custom_hooks=[_AveragedWeightsEMAHook()],
                     default_scope='mmengine')
    runner.register_hook(SwitchToDeployHook())
    with pytest.raises(DeployError,
                       match="_AveragedWeightsEMAHook swaps weights.*not "
                       "mmengine's EMAHook.*Test without --deploy"):
        runner.test()
    assert not runner.model.backbone.deployed


def test_ema_hook_validates_ema_and_origin_weights(tmp_path):
    """mmpretrain's EMAHook swaps EMA weights in with ``.data`` copies,
    validates, swaps back and validates the original weights: each metric
    must be that of its weights (a stale fold of the other weights would
    give the EMA metric twice)."""
    hooks = pytest.importorskip('mmpretrain.engine.hooks')
    metric = _MeanPrediction()
    runner = _runner(
        tmp_path, metric,
        train_dataloader=_loader(),
        train_cfg=dict(by_epoch=True, max_epochs=2, val_interval=1),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.05)),
        val_dataloader=_loader(), val_cfg=dict(), val_evaluator=[metric],
        custom_hooks=[
            # The class itself: by name, mmengine's own EMAHook (which has
            # no ``evaluate_on_origin``) is found unless mmpretrain's
            # registry happens to be imported already.
            dict(type=hooks.EMAHook, momentum=0.3, evaluate_on_origin=True)
        ],
        default_scope='mmpretrain')
    runner.train()
    ema_hook = next(h for h in runner.hooks if type(h).__name__ == 'EMAHook')
    # Per validation: the EMA weights first, then the original ones.
    assert len(metric.history) == 4
    ema_value, origin_value = metric.history[-2:]
    origin = _evaluate(copy.deepcopy(runner.model))
    ema = _evaluate(copy.deepcopy(ema_hook.ema_model.module))
    assert abs(origin - ema) > 1e-3  # the two weight sets differ
    assert ema_value == pytest.approx(ema, abs=1e-5)
    assert origin_value == pytest.approx(origin, abs=1e-5)
