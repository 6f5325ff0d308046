"""A real mmengine training checkpoint for the security tests."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mmengine.runner import Runner
from toys import Regressor, Toy


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
            dataset=Toy(16),
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
