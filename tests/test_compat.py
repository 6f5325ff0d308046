"""The torch.load compatibility layer: resume works, unsafe pickles do not."""
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.logging import HistoryBuffer
from mmengine.model import BaseModel
from mmengine.runner import Runner, load_checkpoint

import fcaformer_mm  # noqa: F401  (applies the layer)
from fcaformer_mm import compat


class _Regressor(BaseModel):
    """A tiny model whose loss depends on the optimizer's whole history."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 1)

    def forward(self, inputs, labels, mode='tensor'):
        out = self.linear(inputs).squeeze(1)
        if mode == 'loss':
            return {'loss': ((out - labels)**2).mean()}
        return out


class _Toy(torch.utils.data.Dataset):

    def __len__(self):
        return 32

    def __getitem__(self, idx):
        gen = torch.Generator().manual_seed(idx)
        x = torch.randn(4, generator=gen)
        return dict(inputs=x, labels=x.sum())


def _runner(work_dir: Path, max_iters: int, resume: bool) -> Runner:
    torch.manual_seed(0)  # the same initial weights for every run
    return Runner(
        model=_Regressor(),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=_Toy(),
            sampler=dict(type='DefaultSampler', shuffle=True),
            batch_size=4,
            collate_fn=dict(type='default_collate')),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.01)),
        param_scheduler=[
            dict(type='LinearLR', start_factor=0.1, by_epoch=False,
                 begin=0, end=3),
            dict(type='PolyLR', by_epoch=False, begin=3, end=10),
        ],
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=4,
                            by_epoch=False),
            logger=dict(type='LoggerHook', interval=1)),
        resume=resume,
        randomness=dict(seed=0),
        default_scope='mmengine')


def test_runner_resumes_from_its_own_checkpoint(tmp_path):
    """Train 4 iters, save; resume to 8; compare with an unbroken 8 iters."""
    first = _runner(tmp_path / 'a', max_iters=4, resume=False)
    first.train()
    ckpt_path = tmp_path / 'a' / 'iter_4.pth'
    assert ckpt_path.is_file()

    # The file really needs the allow-list: plain weights_only loading of a
    # raw pickle refuses HistoryBuffer once the layer's globals are cleared.
    saved = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    try:
        with pytest.raises(pickle.UnpicklingError, match='HistoryBuffer'):
            torch.load(ckpt_path, weights_only=True)
    finally:
        torch.serialization.add_safe_globals(saved)
    ckpt = torch.load(ckpt_path)  # default weights_only=True
    assert isinstance(ckpt['message_hub']['log_scalars']['train/lr'],
                      HistoryBuffer)

    resumed = _runner(tmp_path / 'a', max_iters=8, resume=True)
    resumed.train()
    assert resumed.iter == 8
    history = resumed.message_hub.get_scalar('train/loss')
    # 4 losses from before the checkpoint + 4 after it.
    assert len(history.data[0]) == 8

    straight = _runner(tmp_path / 'b', max_iters=8, resume=False)
    straight.train()
    for p_resumed, p_straight in zip(resumed.model.parameters(),
                                     straight.model.parameters()):
        torch.testing.assert_close(p_resumed, p_straight)
    opt_r = resumed.optim_wrapper.optimizer
    opt_s = straight.optim_wrapper.optimizer
    assert opt_r.param_groups[0]['lr'] == pytest.approx(
        opt_s.param_groups[0]['lr'])
    for st_r, st_s in zip(opt_r.state.values(), opt_s.state.values()):
        torch.testing.assert_close(st_r['exp_avg_sq'], st_s['exp_avg_sq'])
        assert float(st_r['step']) == float(st_s['step']) == 8


class _Evil:
    """Runs a shell command when unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


def test_malicious_checkpoint_is_refused(tmp_path):
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {'w': torch.ones(1)}, 'meta': _Evil(marker)},
               path)
    model = nn.Linear(1, 1)
    with pytest.raises(pickle.UnpicklingError, match='Weights only load'):
        load_checkpoint(model, str(path), map_location='cpu')
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)
    assert not marker.exists()


class _Reach:
    """Pickles as getattr(HistoryBuffer, name): what the stand-in gates."""

    def __init__(self, name):
        self.name = name

    def __reduce__(self):
        return (getattr, (HistoryBuffer, self.name))


@pytest.mark.parametrize('name', ['__init__', '__class__', 'update'])
def test_getattr_stand_in_refuses_everything_else(tmp_path, name):
    path = tmp_path / 'reach.pth'
    torch.save({'x': _Reach(name)}, path)
    with pytest.raises(pickle.UnpicklingError, match='refuses getattr'):
        torch.load(path)


def test_getattr_stand_in_allows_statistics_methods(tmp_path):
    path = tmp_path / 'ok.pth'
    torch.save({'x': _Reach('mean')}, path)
    assert torch.load(path)['x'] is HistoryBuffer.mean


def test_numpy_values_round_trip(tmp_path):
    path = tmp_path / 'np.pth'
    value = {'array': np.arange(6, dtype=np.float32).reshape(2, 3),
             'scalar': np.float64(2.5), 'int': np.int64(3),
             'dtype': np.dtype('int16')}
    torch.save(value, path)
    loaded = torch.load(path)
    np.testing.assert_array_equal(loaded['array'], value['array'])
    assert loaded['scalar'] == 2.5 and loaded['int'] == 3
    assert loaded['dtype'] == np.dtype('int16')


def test_apply_is_idempotent_and_documented():
    first = compat.apply()
    second = compat.apply()
    assert first == second and first['applied']
    assert compat.is_applied()
    names = compat.safe_global_names()
    assert 'mmengine.logging.history_buffer.HistoryBuffer' in names
    assert 'builtins.getattr' in names
    assert len(names) == len(set(names))
