"""Shared pieces of the end-to-end tests: synthetic datasets, the small
sizes passed with ``--cfg-options``, and a runner for the tools."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / 'tools'
CONFIGS = REPO / 'configs'

SEG_CONFIG = CONFIGS / 'upernet_fcaformer_l2_ade20k.py'
MASK_RCNN_CONFIG = CONFIGS / 'mask_rcnn_fcaformer_l2_fpn_3x_coco.py'
CASCADE_CONFIG = CONFIGS / 'cascade_mask_rcnn_fcaformer_l2_fpn_3x_coco.py'
CLS_CONFIG = CONFIGS / 'fcaformer_l1_in1k.py'

#: Only catches a hung tool run: many times what the small runs here take
#: on a busy machine (the tests never depend on the machine's speed).
RUN_TIMEOUT = 1800


def tool_env() -> dict:
    """The environment of the tool subprocesses: CPU only, the repo on the
    path, one thread pool no larger than the machine."""
    env = dict(os.environ)
    env['CUDA_VISIBLE_DEVICES'] = ''
    env['PYTHONPATH'] = os.pathsep.join(
        p for p in (str(REPO), env.get('PYTHONPATH')) if p)
    env.setdefault('PYTHONWARNINGS', 'ignore')
    return env


def run(args: list, cwd: Path, check: bool = True,
        env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a command (``args[0]`` a script run with this Python, or
    ``bash``), return the completed process; on failure show its output."""
    cmd = [str(a) for a in args]
    if cmd[0].endswith('.py'):
        cmd = [sys.executable] + cmd
    proc = subprocess.run(
        cmd, cwd=cwd, env=env or tool_env(), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, timeout=RUN_TIMEOUT)
    if check and proc.returncode != 0:
        pytest.fail(f'{" ".join(cmd)} exited {proc.returncode}:\n'
                    f'{proc.stdout[-8000:]}')
    return proc


def free_port() -> int:
    """A TCP port that is free now (for torchrun's rendezvous)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def options(**kv) -> list:
    """``--cfg-options`` arguments from keyword pairs (``__`` -> ``.``)."""
    return ['--cfg-options'] + [
        f'{k.replace("__", ".")}={v}' for k, v in kv.items()
    ]


# --------------------------------------------------------------------------
# Small settings per config: real pipelines and evaluators, tiny sizes.
# --------------------------------------------------------------------------
def seg_options(root: Path, max_iters: int = 2) -> dict:
    """UperNet on the synthetic ADE20K: 64x64 crops, batch 2 (the
    pooling branch of the PPM has BatchNorm on 1x1 maps, which needs two),
    ``max_iters`` iterations, a checkpoint at the end, test on 2 images at
    64x64 without sliding windows."""
    opts = {
        'model.backbone.init_cfg': None,
        'train_dataloader.dataset.data_root': root,
        'val_dataloader.dataset.data_root': root,
        'test_dataloader.dataset.data_root': root,
        'train_dataloader.dataset.pipeline.2.scale': '(64,64)',
        'train_dataloader.dataset.pipeline.3.crop_size': '(64,64)',
        'model.data_preprocessor.size': '(64,64)',
        'val_dataloader.dataset.pipeline.1.scale': '(64,64)',
        'test_dataloader.dataset.pipeline.1.scale': '(64,64)',
        'test_dataloader.dataset.indices': 2,
        'val_dataloader.dataset.indices': 2,
        'model.test_cfg.mode': 'whole',
        'train_dataloader.batch_size': 2,
        'train_dataloader.num_workers': 0,
        'train_dataloader.persistent_workers': False,
        'val_dataloader.num_workers': 0,
        'val_dataloader.persistent_workers': False,
        'test_dataloader.num_workers': 0,
        'test_dataloader.persistent_workers': False,
        'train_cfg.max_iters': max_iters,
        'train_cfg.val_interval': 1000,
        'default_hooks.checkpoint.interval': 2,
        'default_hooks.logger.interval': 1,
    }
    # The multi-scale TTA at 0.5-1.75 x 64x64 instead of x (2048, 512).
    for i, r in enumerate((0.5, 0.75, 1.0, 1.25, 1.5, 1.75)):
        side = int(64 * r)
        opts[f'tta_pipeline.1.transforms.0.{i}.scale'] = f'({side},{side})'
    return opts


def _det_options(root: Path, cascade: bool) -> dict:
    ann = root / 'annotations' / 'instances_val2017.json'
    opts = {
        'model.backbone.init_cfg': None,
        'train_dataloader.dataset.data_root': f'{root}/',
        'val_dataloader.dataset.data_root': f'{root}/',
        'test_dataloader.dataset.data_root': f'{root}/',
        'val_evaluator.ann_file': ann,
        'test_evaluator.ann_file': ann,
        # Both branches of the multi-scale + crop augmentation, at
        # 128x160 instead of 480-800 x 1333.
        'train_dataloader.dataset.pipeline.3.transforms.0.0.scales':
        '"[(160,128),(160,96)]"',
        'train_dataloader.dataset.pipeline.3.transforms.1.0.scales':
        '"[(160,128)]"',
        'train_dataloader.dataset.pipeline.3.transforms.1.1.crop_size':
        '(64,96)',
        'train_dataloader.dataset.pipeline.3.transforms.1.2.scales':
        '"[(160,128),(160,96)]"',
        'val_dataloader.dataset.pipeline.1.scale': '(160,128)',
        'test_dataloader.dataset.pipeline.1.scale': '(160,128)',
        'train_dataloader.batch_size': 1,
        'train_dataloader.num_workers': 0,
        'train_dataloader.persistent_workers': False,
        'val_dataloader.num_workers': 0,
        'val_dataloader.persistent_workers': False,
        'test_dataloader.num_workers': 0,
        'test_dataloader.persistent_workers': False,
        'train_cfg.max_epochs': 1,
        'train_cfg.val_interval': 1000,
        'default_hooks.logger.interval': 1,
        # Few proposals and RoIs: the heads are the same, only cheaper.
        'model.train_cfg.rpn_proposal.nms_pre': 200,
        'model.train_cfg.rpn_proposal.max_per_img': 100,
        'model.test_cfg.rpn.nms_pre': 200,
        'model.test_cfg.rpn.max_per_img': 50,
        # Untrained heads score every class about 1/81: keep the boxes so
        # that the COCO evaluation has detections to match.
        'model.test_cfg.rcnn.score_thr': 0.0,
        'model.test_cfg.rcnn.max_per_img': 20,
    }
    if cascade:
        for i in range(3):
            opts[f'model.train_cfg.rcnn.{i}.sampler.num'] = 64
    else:
        opts['model.train_cfg.rcnn.sampler.num'] = 64
    return opts


def mask_rcnn_options(root: Path) -> dict:
    """Mask R-CNN on the synthetic COCO (see :func:`_det_options`)."""
    return _det_options(root, cascade=False)


def cascade_options(root: Path) -> dict:
    """Cascade Mask R-CNN on the synthetic COCO."""
    return _det_options(root, cascade=True)


def cls_options(root: Path) -> dict:
    """FcaFormer-L1 on the synthetic ImageNet: 64x64 crops, batch 4 (two
    iterations per epoch), validation after the epoch (EMA weights,
    save_best)."""
    return {
        'train_dataloader.dataset.data_root': root,
        'val_dataloader.dataset.data_root': root,
        'test_dataloader.dataset.data_root': root,
        'train_dataloader.dataset.pipeline.1.scale': 64,
        'val_dataloader.dataset.pipeline.1.scale': 73,
        'val_dataloader.dataset.pipeline.2.crop_size': 64,
        'test_dataloader.dataset.pipeline.1.scale': 73,
        'test_dataloader.dataset.pipeline.2.crop_size': 64,
        'train_dataloader.batch_size': 4,
        'val_dataloader.batch_size': 4,
        'test_dataloader.batch_size': 4,
        'train_dataloader.num_workers': 0,
        'train_dataloader.persistent_workers': False,
        'val_dataloader.num_workers': 0,
        'val_dataloader.persistent_workers': False,
        'test_dataloader.num_workers': 0,
        'test_dataloader.persistent_workers': False,
        'train_cfg.max_epochs': 1,
        'default_hooks.logger.interval': 1,
    }


# --------------------------------------------------------------------------
# Datasets, made once per session.
# --------------------------------------------------------------------------
@pytest.fixture(scope='session')
def ade_root(tmp_path_factory) -> Path:
    from fcaformer_mm.datasets.synthetic import make_ade20k
    return make_ade20k(
        tmp_path_factory.mktemp('ade') / 'ADEChallengeData2016',
        num_train=4, num_val=2, size=(64, 64))


@pytest.fixture(scope='session')
def coco_root(tmp_path_factory) -> Path:
    from fcaformer_mm.datasets.synthetic import make_coco
    return make_coco(
        tmp_path_factory.mktemp('coco') / 'coco',
        num_train=2, num_val=2, size=(128, 160))


@pytest.fixture(scope='session')
def imagenet_root(tmp_path_factory) -> Path:
    from fcaformer_mm.datasets.synthetic import make_imagenet
    return make_imagenet(
        tmp_path_factory.mktemp('imagenet') / 'imagenet',
        num_classes=4, num_train_per_class=2, num_val_per_class=1,
        size=(64, 64))
