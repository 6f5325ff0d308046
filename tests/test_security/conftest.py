"""A real mmengine training checkpoint for the security tests."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn
from mmengine.model import BaseModel
from mmengine.runner import Runner


class Regressor(BaseModel):
    """A linear model with a loss, enough for mmengine's Runner."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 1)

    def forward(self, inputs, labels, mode='tensor'):
        out = self.linear(inputs).squeeze(1)
        if mode == 'loss':
            return {'loss': ((out - labels)**2).mean()}
        return out


class Toy(torch.utils.data.Dataset):

    def __len__(self):
        return 16

    def __getitem__(self, idx):
        x = torch.randn(4, generator=torch.Generator().manual_seed(idx))
        return dict(inputs=x, labels=x.sum())


def make_runner(work_dir: Path, max_iters: int, resume: bool = False,
                load_from: str | None = None) -> Runner:
    """A Runner that saves a checkpoint every 2 iterations."""
    torch.manual_seed(0)
    return Runner(
        # mmengine names its logger and visualizer after the experiment, by
        # default the second it starts in: two runners of one second clash.
        experiment_name=f'{work_dir.parent.name}_{work_dir.name}',
        model=Regressor(),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=Toy(),
            sampler=dict(type='DefaultSampler', shuffle=True),
            batch_size=4,
            collate_fn=dict(type='default_collate')),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.01)),
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=2,
                            by_epoch=False),
            logger=dict(type='LoggerHook', interval=1)),
        resume=resume,
        load_from=load_from,
        randomness=dict(seed=0),
        default_scope='mmengine')


@pytest.fixture(scope='session')
def real_checkpoint(tmp_path_factory) -> Path:
    """``iter_2.pth`` of a real Runner: HistoryBuffer and numpy values in
    its message hub, the config in ``meta['cfg']``, optimizer state."""
    work_dir = tmp_path_factory.mktemp('real_run')
    make_runner(work_dir, max_iters=2).train()
    return work_dir / 'iter_2.pth'
