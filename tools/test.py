#!/usr/bin/env python3
"""Test (evaluate) a checkpoint with an mmseg, mmdet or mmpretrain config.

One tool for the three codebases: the config's ``default_scope`` decides.
The options are those of the codebases' own ``tools/test.py``, plus
``--cpu``:

``--tta``
    Test-time augmentation: the config's ``tta_model`` and
    ``tta_pipeline`` (the UperNet config's multi-scale + flip test, behind
    the published mIoU); mmdet and mmpretrain configs without them get a
    horizontal-flip TTA, as with their own tools.
``--out``
    mmseg: a directory for the predicted masks (PNG); mmdet, mmpretrain: a
    ``.pkl`` file of the predictions.
``--cpu``
    Test on the CPU (SyncBN -> BN, gloo backend; the GPUs are hidden).
``--deploy``
    Fold FcaFormer's Conv-BN layers and layer scales once the checkpoint is
    loaded (``switch_to_deploy()``, same numbers). Off by default: it saves
    about 2 % of the test time. An ``EMAHook`` (mmengine's or a subclass)
    keeps the model unfolded, as it swaps unfolded weights in; another hook
    that swaps weights (a name with ``EMA``) is refused with ``--deploy``.
``--allow-partial``
    Test although weights of the backbone, neck or heads are missing from
    the checkpoint. Without it, a checkpoint that does not fit the config's
    model (no weight matched, a weight missing or of another shape) stops
    the tool with a non-zero exit and the list of missing and unexpected
    keys (``fcaformer_mm.utils.checkpoint_check``), instead of scoring
    weights that never loaded.

The checkpoint is read with ``torch.load(weights_only=True)``, local or
URL (``fcaformer_mm.compat``); an unsafe or unreadable one stops the tool
with a message that says why.

Examples:
    python tools/test.py configs/upernet_fcaformer_l2_ade20k.py \\
        upernet.pth --tta
    bash tools/dist_test.sh configs/mask_rcnn_fcaformer_l2_fpn_3x_coco.py \\
        mask_rcnn.pth 8 --out results.pkl
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

from mmengine.config import DictAction  # noqa: E402


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (``argv`` defaults to ``sys.argv[1:]``)."""
    parser = argparse.ArgumentParser(
        description='Test a checkpoint with an mmseg, mmdet or mmpretrain '
        'config.',
        allow_abbrev=False)
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir',
        help='the dir to save the logs and metrics (default: '
        './work_dirs/<config name>)')
    parser.add_argument(
        '--out',
        help='mmseg: directory for the predicted masks; mmdet, mmpretrain: '
        '.pkl file for the predictions')
    parser.add_argument(
        '--show', action='store_true', help='show the predictions')
    parser.add_argument(
        '--show-dir', help='directory for images drawn with the predictions')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument(
        '--tta', action='store_true', help='test-time augmentation')
    parser.add_argument(
        '--cpu',
        action='store_true',
        help='test on the CPU: SyncBN -> BN, gloo backend; the GPUs are '
        'hidden')
    parser.add_argument(
        '--deploy',
        action='store_true',
        help='fold FcaFormer (switch_to_deploy: Conv-BN and layer scales) '
        'after loading the checkpoint; same numbers, about 2%% faster; '
        'refused with a weight-swapping hook other than EMAHook')
    parser.add_argument(
        '--allow-partial',
        action='store_true',
        help='test even if backbone, neck or head weights are missing from '
        'the checkpoint (they keep their initial values)')
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
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    """Test; return the metrics."""
    args = parse_args(argv)
    import fcaformer_mm  # noqa: F401  (registers into the hosts)
    from fcaformer_mm.compat import CheckpointError, check_checkpoint_file
    from fcaformer_mm.datasets.checks import check_dataset_layout
    from fcaformer_mm.utils import entrypoint as ep
    from fcaformer_mm.utils.checkpoint_check import CheckpointFitHook
    from fcaformer_mm.utils.cpu import (
        check_cpu_device,
        init_cpu_dist,
        to_cpu_config,
    )

    if args.cpu:
        check_cpu_device()
    if '://' not in args.checkpoint:
        try:  # before anything is built
            check_checkpoint_file(args.checkpoint)
        except CheckpointError as err:
            raise SystemExit(f'{type(err).__name__}: {err}') from None

    try:
        cfg = ep.load_config(args.config, args.cfg_options, args.work_dir,
                             args.launcher)
        if args.out is not None:
            ep.refuse_overwriting_inputs(
                args.out, {'the checkpoint': args.checkpoint,
                           'the config': args.config}, '--out')
    except (SyntaxError, ValueError) as err:
        raise SystemExit(f'{type(err).__name__}: {err}') from None
    if args.cpu:
        cfg = to_cpu_config(cfg)
    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        ep.setup_visualization(cfg, args.show, args.show_dir, args.wait_time)
    if args.tta:
        try:
            ep.setup_tta(cfg)
        except ValueError as err:
            raise SystemExit(f'ValueError: {err}') from None
    ep.setup_out(cfg, args.out)

    try:
        check_dataset_layout(cfg)
    except FileNotFoundError as err:
        # The message says what is missing and how to fix it.
        raise SystemExit(f'FileNotFoundError: {err}') from None
    if args.cpu:
        init_cpu_dist(args.launcher, **cfg.env_cfg.get('dist_cfg', {}))
    runner = ep.build_runner(cfg)
    ep.add_out_dumper(runner, cfg, args.out)
    runner.register_hook(
        CheckpointFitHook(args.allow_partial, args.checkpoint),
        priority='VERY_HIGH')
    if args.deploy:
        from fcaformer_mm.engine.hooks.deploy_hook import (
            DeployError,
            SwitchToDeployHook,
            check_deployable,
        )
        try:
            check_deployable(runner.hooks)
        except DeployError as err:
            raise SystemExit(f'{type(err).__name__}: {err}') from None
        runner.register_hook(SwitchToDeployHook())
    try:
        return runner.test()
    except CheckpointError as err:
        raise SystemExit(f'{type(err).__name__}: {err}') from None


if __name__ == '__main__':
    main()
