"""End to end on the CPU: 2-process runs over gloo through
``tools/dist_train.sh`` and ``tools/dist_test.sh``, runs under mmseg's and
mmdet's own tools and under ``mim train``, and the clear errors of ``--amp``
on the CPU, of AMP configs without ``--cpu`` and of a missing dataset."""
from __future__ import annotations

import shutil
import sys

import pytest
import torch

from .conftest import (
    CPU_OPTIONS,
    MASK_RCNN_CONFIG,
    SEG_CONFIG,
    TOOLS,
    free_port,
    mask_rcnn_options,
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
    opts['env_cfg.dist_cfg.timeout'] = 1800
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


def test_config_runs_under_mmseg_own_train_tool(stock_trainings):
    """The config as it is, under mmseg's stock ``tools/train.py``: only
    ``--cfg-options`` for a GPU-less machine; the Runner turns SyncBN into
    BN when not distributed."""
    run = stock_trainings['mmseg_train']
    output = run.check()
    assert 'FcaFormerLayerDecayOptimWrapperConstructor' in output
    assert 'reverted to BatchNormXd' in output
    assert (run.folder / 'iter_2.pth').is_file()


def test_config_runs_under_mmdet_own_tools(stock_trainings):
    """Mask R-CNN under mmdet's stock ``tools/train.py`` and
    ``tools/test.py`` (COCO bbox and segm through pycocotools)."""
    run = stock_trainings['mmdet_train']
    assert 'FcaFormerLayerDecayOptimWrapperConstructor' in run.check()
    assert (run.folder / 'epoch_1.pth').is_file()
    output = stock_trainings['mmdet_test'].check()
    assert 'coco/bbox_mAP' in output
    assert 'coco/segm_mAP' in output


@pytest.mark.parametrize('codebase', ['mmseg', 'mmdet'])
def test_mim_train(codebase, ade_root, coco_root, tmp_path):
    """``mim train <codebase> CONFIG --gpus 0`` (OpenMIM runs the
    codebase's own tools/train.py with ``--launcher none``)."""
    if codebase == 'mmseg':
        config, opts = SEG_CONFIG, seg_options(ade_root, max_iters=2)
        checkpoint = 'iter_2.pth'
    else:
        config, opts = MASK_RCNN_CONFIG, mask_rcnn_options(coco_root)
        checkpoint = 'epoch_1.pth'
    work_dir = tmp_path / 'mim'
    proc = run([
        sys.executable, '-m', 'mim', 'train', codebase, config, '--gpus', 0,
        '--work-dir', work_dir
    ] + options(**opts, **CPU_OPTIONS),
               cwd=tmp_path)
    # OpenMIM names the script it runs, then reports success.
    command = next(line for line in proc.stdout.splitlines()
                   if line.startswith('Training command is'))
    assert f'{codebase}/.mim/tools/train.py' in command
    assert '--launcher none' in command
    assert 'Training finished successfully' in proc.stdout
    assert 'FcaFormerLayerDecayOptimWrapperConstructor' in proc.stdout
    assert (work_dir / checkpoint).is_file()


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


def test_tta_of_mask_rcnn_is_a_clear_error(tmp_path):
    # A readable checkpoint, so that the file check passes and the TTA
    # check is what stops the run.
    checkpoint = tmp_path / 'any.pth'
    torch.save({'state_dict': {}}, checkpoint)
    proc = run([TOOLS / 'test.py', MASK_RCNN_CONFIG, checkpoint, '--cpu',
                '--tta'], cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert 'merges boxes only' in proc.stdout
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
