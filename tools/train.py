#!/usr/bin/env python3
"""Train a model from an mmseg, mmdet or mmpretrain config.

One tool for the three codebases: the config's ``default_scope`` decides.
The options are those of the codebases' own ``tools/train.py``, plus
``--cpu``.

Examples:
    python tools/train.py configs/upernet_fcaformer_l2_ade20k.py \\
        --cfg-options model.backbone.init_cfg.checkpoint=fcaformer_l2.pth
    python tools/train.py configs/fcaformer_l1_in1k.py --resume
    bash tools/dist_train.sh configs/mask_rcnn_fcaformer_l2_fpn_3x_coco.py 8

Nothing a user made is replaced (``fcaformer_mm.utils.entrypoint``):

* A work dir that already holds checkpoints (``*.pth``) or a
  ``last_checkpoint`` (or whose ``default_hooks.checkpoint.out_dir`` holds
  checkpoints) is refused unless ``--resume`` continues that run or
  ``--overwrite`` deletes those checkpoints first. ``--resume`` without a
  path checks that ``last_checkpoint`` names a checkpoint that exists;
  ``--resume PATH`` must name one of the work dir's checkpoints when it
  holds any. ``--overwrite`` never deletes the checkpoint ``load_from``
  names.
* One run at a time per work dir: a lock (``.train.lock``, released when
  the process ends, even when killed) refuses a second run at once.
* The config dump of mmengine goes to another name when
  ``<work_dir>/<config name>`` exists (the user's own config, say).
* A syntax error in the config is reported at its file and line, and an
  unknown top-level ``--cfg-options`` key is refused with the closest key.

``--cpu`` trains on the CPU with the config otherwise as written: the
``AmpOptimWrapper`` of the recipes becomes an ``OptimWrapper`` (same
optimizer and layer decay), SyncBN becomes BN and the distributed backend
``gloo`` (``fcaformer_mm.utils.cpu.to_cpu_config``). It also works with
``tools/dist_train.sh CONFIG 2 --cpu`` (processes on one machine).
"""
from __future__ import annotations

import os
import sys

if __name__ == '__main__' and '--cpu' in sys.argv[1:]:
    # mmengine picks its device once, when it is first imported: hide the
    # GPUs before that.
    os.environ['CUDA_VISIBLE_DEVICES'] = ''

import argparse  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

from mmengine.config import DictAction  # noqa: E402

if TYPE_CHECKING:
    from mmengine.config import Config
    from mmengine.runner import Runner


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (``argv`` defaults to ``sys.argv[1:]``)."""
    parser = argparse.ArgumentParser(
        description='Train a model from an mmseg, mmdet or mmpretrain '
        'config.',
        allow_abbrev=False)
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from this checkpoint, or, without a path, from the '
        'latest checkpoint in the work dir')
    parser.add_argument(
        '--overwrite',
        action='store_true',
        help='delete the checkpoints (*.pth, last_checkpoint) that the work '
        'dir holds and start a new run there; without it (or --resume) '
        'such a work dir is refused')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='enable automatic mixed precision training (needs a GPU)')
    parser.add_argument(
        '--cpu',
        action='store_true',
        help='train on the CPU: AmpOptimWrapper -> OptimWrapper, SyncBN -> '
        'BN, gloo backend; the GPUs are hidden')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the lr by the real total batch size '
        '(auto_scale_lr.base_batch_size of the config)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, key=value pairs '
        '(key="[a,b]" for lists, no white space)')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    # torch.distributed.launch passes --local-rank (torch >= 2.0) or
    # --local_rank; torchrun sets LOCAL_RANK.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def main(argv: Sequence[str] | None = None) -> Runner:
    """Train; return the Runner."""
    args = parse_args(argv)
    import torch

    import fcaformer_mm  # noqa: F401  (registers into the hosts)
    from fcaformer_mm.utils import entrypoint as ep
    from fcaformer_mm.utils.cpu import (
        check_cpu_device,
        to_cpu_config,
    )

    if args.cpu:
        check_cpu_device()

    try:
        cfg = ep.load_config(args.config, args.cfg_options, args.work_dir,
                             args.launcher)
    except (SyntaxError, ep.ConfigOptionError) as err:
        raise SystemExit(f'{type(err).__name__}: {err}') from None
    if args.amp and (args.cpu or not torch.cuda.is_available()):
        raise SystemExit('--amp needs a GPU (torch.cuda.amp); it cannot be '
                         'used with --cpu or on a machine without CUDA.')
    if args.cpu:
        cfg = to_cpu_config(cfg)
    elif ep.has_amp_wrapper(cfg) and not torch.cuda.is_available():
        raise SystemExit(
            f'{args.config} trains with AmpOptimWrapper, which needs a GPU, '
            'and none is available: add --cpu to train on the CPU.')
    if args.amp:
        ep.enable_amp(cfg)
    ep.set_resume(cfg, args.resume)
    rank = os.environ.get('RANK', os.environ.get('SLURM_PROCID', '0'))
    try:
        with ep.claim_work_dir(cfg, args.resume, args.overwrite,
                               main_process=rank == '0'):
            return _train(args, cfg)
    except ep.WorkDirError as err:
        raise SystemExit(f'WorkDirError: {err}') from None


def _train(args: argparse.Namespace, cfg: Config) -> Runner:
    """Check the data, build the Runner and train, with the work dir
    locked and checked."""
    from fcaformer_mm.compat import CheckpointError
    from fcaformer_mm.datasets.checks import check_dataset_layout
    from fcaformer_mm.utils import entrypoint as ep
    from fcaformer_mm.utils.cpu import init_cpu_dist

    if args.auto_scale_lr:
        ep.enable_auto_scale_lr(cfg)
    try:
        check_dataset_layout(cfg)
    except FileNotFoundError as err:
        # The message says what is missing and how to fix it.
        raise SystemExit(f'FileNotFoundError: {err}') from None
    if args.cpu:
        init_cpu_dist(args.launcher, **cfg.env_cfg.get('dist_cfg', {}))
    runner = ep.build_runner(cfg)
    try:
        runner.train()
    except CheckpointError as err:  # load_from / --resume
        raise SystemExit(f'{type(err).__name__}: {err}') from None
    return runner


if __name__ == '__main__':
    main()
