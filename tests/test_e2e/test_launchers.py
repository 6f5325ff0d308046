"""End to end on the CPU: 2-process runs over gloo through
``tools/dist_train.sh`` and ``tools/dist_test.sh``, a run under mmseg's own
training tool, and the clear errors of ``--amp`` on the CPU, of AMP configs
without ``--cpu`` and of a missing dataset."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from .conftest import (
    SEG_CONFIG,
    TOOLS,
    free_port,
    options,
    run,
    seg_options,
    tool_env,
)


@pytest.mark.skipif(shutil.which('bash') is None, reason='needs bash')
def test_dist_train_two_processes_gloo(ade_root, tmp_path):
    work_dir = tmp_path / 'dist'
    env = tool_env()
    env.update(PYTHON=sys.executable, PORT=str(free_port()))
    # Two processes of two images each: one iteration is one pass over the
    # four training images.
    opts = seg_options(ade_root, max_iters=2)
    opts['env_cfg.dist_cfg.timeout'] = 300
    proc = run(['bash', TOOLS / 'dist_train.sh', SEG_CONFIG, 2, '--cpu',
                '--work-dir', work_dir] + options(**opts),
               cwd=tmp_path, env=env)
    log = proc.stdout
    assert 'Distributed launcher: pytorch' in log
    assert 'Distributed training: True' in log
    assert 'GPU number: 2' in log  # mmengine's name for the world size
    assert "dist_cfg: {'backend': 'gloo'" in log
    assert 'MMDistributedDataParallel' in log
    assert (work_dir / 'iter_2.pth').is_file()

    # And the test over the two processes: each sees one of the two images.
    env['PORT'] = str(free_port())
    proc = run(['bash', TOOLS / 'dist_test.sh', SEG_CONFIG,
                work_dir / 'iter_2.pth', 2, '--cpu', '--work-dir',
                tmp_path / 'dist_test'] + options(**opts),
               cwd=tmp_path, env=env)
    assert 'GPU number: 2' in proc.stdout
    assert 'mIoU:' in proc.stdout


def _mmseg_tool(name: str) -> Path:
    import mmseg
    return Path(mmseg.__file__).parent / '.mim' / 'tools' / name


def test_config_runs_under_mmseg_own_train_tool(ade_root, tmp_path):
    """The config as it is, under mmseg's stock ``tools/train.py`` (the one
    ``mim train mmseg`` runs): only ``--cfg-options`` for a GPU-less
    machine; the Runner turns SyncBN into BN when not distributed."""
    tool = _mmseg_tool('train.py')
    assert tool.is_file(), f'{tool} is not in the installed mmseg wheel'
    opts = seg_options(ade_root, max_iters=2)
    # AmpOptimWrapper needs a GPU: the same optimizer in an OptimWrapper.
    opts.update({
        'optim_wrapper._delete_': True,
        'optim_wrapper.type': 'OptimWrapper',
        'optim_wrapper.optimizer.type': 'AdamW',
        'optim_wrapper.optimizer.lr': 1e-4,
        'optim_wrapper.optimizer.betas': '(0.9,0.999)',
        'optim_wrapper.optimizer.weight_decay': 0.01,
        'optim_wrapper.constructor':
        'FcaFormerLayerDecayOptimWrapperConstructor',
        'optim_wrapper.paramwise_cfg.decay_rate': 0.9,
        'optim_wrapper.paramwise_cfg.decay_type': 'stage_wise',
        'optim_wrapper.paramwise_cfg.num_layers': 6,
    })
    work_dir = tmp_path / 'stock'
    proc = run([tool, SEG_CONFIG, '--work-dir', work_dir] + options(**opts),
               cwd=tmp_path)
    assert 'FcaFormerLayerDecayOptimWrapperConstructor' in proc.stdout
    assert 'reverted to BatchNormXd' in proc.stdout
    assert (work_dir / 'iter_2.pth').is_file()


def test_amp_on_cpu_is_a_clear_error(tmp_path):
    proc = run([TOOLS / 'train.py', SEG_CONFIG, '--cpu', '--amp'],
               cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert '--amp needs a GPU' in proc.stdout
    assert 'Traceback' not in proc.stdout


def test_amp_config_without_cpu_flag_is_a_clear_error(tmp_path):
    proc = run([TOOLS / 'train.py', SEG_CONFIG], cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert 'add --cpu' in proc.stdout
    assert 'Traceback' not in proc.stdout


def test_missing_dataset_is_a_clear_error(tmp_path):
    proc = run([
        TOOLS / 'train.py', SEG_CONFIG, '--cpu', '--cfg-options',
        f'train_dataloader.dataset.data_root={tmp_path / "nowhere"}'
    ],
               cwd=tmp_path,
               check=False)
    assert proc.returncode != 0
    assert 'FileNotFoundError' in proc.stdout
    assert 'nowhere' in proc.stdout
