#!/usr/bin/env python3
"""The built-in example: train UperNet + FcaFormer-L2 on a small synthetic
ADE20K on the CPU for a few minutes, evaluate it, count its MACs, and
report on the installed stack. The README's first command ends here.

Steps:

1. A synthetic dataset in the ADE20K layout (``ADEChallengeData2016``,
   128x128 images: shapes whose class follows shape and colour, on six of
   the 150 classes) is written to ``work_dirs/demo/data``, or reused if an
   earlier run wrote it.
2. ``configs/upernet_fcaformer_l2_ade20k.py`` is trained through
   ``tools/train.py --cpu`` (the code path of real runs), from scratch
   (``model.backbone.init_cfg=None``: no ImageNet checkpoint), with small
   crops, a short schedule and ``--cfg-options`` for the data root. The
   model is the config's, unchanged: 46M parameters.
3. ``tools/test.py --cpu`` evaluates the last checkpoint on the validation
   images with mmseg's ``IoUMetric``; the mIoU is compared with chance
   (predicting the most frequent class everywhere, or a class at random).
4. ``tools/analysis_tools/get_flops.py`` counts the parameters and MACs.
5. The environment report.

It exits with a non-zero status if the stack is incomplete or the mIoU is
not clearly above chance. Options: ``--iters``, ``--crop``, ``--batch``,
``--work-dir`` (see ``--help``); ``--report-only`` prints the environment
report alone (step 5) and exits with the same status check of the stack.
Each run trains afresh in ``<work-dir>/train``, replacing the checkpoints
of the previous demo run there (``tools/train.py --overwrite``).
"""
from __future__ import annotations

import os

# The example runs on the CPU, also on machines with a GPU; mmengine picks
# its device when first imported, so this comes first.
os.environ['CUDA_VISIBLE_DEVICES'] = ''

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / 'configs' / 'upernet_fcaformer_l2_ade20k.py'
DATA_PARAMS = dict(num_train=40, num_val=10, size=(128, 128), seed=0)
#: The mIoU must reach this multiple of the chance level.
MIN_RATIO_TO_CHANCE = 1.5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument(
        '--work-dir',
        default=str(REPO / 'work_dirs' / 'demo'),
        help='where the data, logs and checkpoints go '
        '(default: work_dirs/demo)')
    parser.add_argument(
        '--iters', type=int, default=200, help='training iterations '
        '(default: 200)')
    parser.add_argument(
        '--crop', type=int, default=64, help='training crop side '
        '(default: 64)')
    parser.add_argument(
        '--batch', type=int, default=2, help='images per iteration '
        '(default: 2, the least for the BatchNorm of the pooling branch)')
    parser.add_argument(
        '--lr', type=float, default=1e-3, help='AdamW lr of the head; the '
        "backbone's decays layer by layer (default: 1e-3)")
    parser.add_argument(
        '--skip-flops', action='store_true', help='do not count the MACs')
    parser.add_argument(
        '--report-only',
        action='store_true',
        help='print the environment report only (no data, training or '
        'evaluation); exit 1 if the stack is incomplete')
    return parser.parse_args(argv)


class ToolError(RuntimeError):
    """A tool that the example runs exited with an error."""


def run_tool(relpath: str, args: list[str]) -> None:
    """Run a script of ``tools/`` with this Python, as the README's
    commands run it; its output goes to this terminal.

    Raises:
        ToolError: If the tool exits with a non-zero status.
    """
    cmd = [sys.executable, str(REPO / 'tools' / relpath)] + args
    status = subprocess.run(cmd).returncode
    if status != 0:
        raise ToolError(f'tools/{relpath} exited with status {status}')


def last_test_metrics(test_dir: Path) -> dict:
    """The metrics of the latest ``tools/test.py`` run in ``test_dir``:
    the last line of ``<test_dir>/<timestamp>/<timestamp>.json``, which
    mmengine's ``LoggerHook`` writes after testing."""
    logs = [p for p in test_dir.glob('*/*.json') if p.stem == p.parent.name]
    if not logs:
        raise ToolError(f'tools/test.py wrote no metrics under {test_dir}')
    latest = max(logs, key=lambda p: p.stat().st_mtime)
    return json.loads(latest.read_text().splitlines()[-1])


def _banner(text: str) -> None:
    print(f'\n{"=" * 72}\n{text}\n{"=" * 72}', flush=True)


def stack_problems(env: dict) -> list[str]:
    """What is missing or broken in the environment report ``env``."""
    problems = [
        name for name in ('mmcv', 'mmpretrain', 'mmseg', 'mmdet')
        if not env['versions'][name][:1].isdigit()
    ]
    if env['mmcv_ops'] != 'yes':
        problems.append('mmcv ops')
    return problems


def prepare_data(data_root: Path) -> tuple[Path, bool]:
    """Write the synthetic ADE20K into ``data_root``, or reuse it.

    Returns:
        tuple: The dataset root and whether it was reused.
    """
    from fcaformer_mm.datasets.synthetic import MANIFEST_NAME, make_ade20k

    manifest = data_root / MANIFEST_NAME
    if manifest.is_file():
        try:
            made = json.loads(manifest.read_text())
            wanted = dict(DATA_PARAMS, size=list(DATA_PARAMS['size']))
            if (made.get('dataset') == 'ade20k'
                    and made.get('params') == wanted and all(
                        (data_root / f).is_file() for f in made['files'])):
                return data_root, True
        except (ValueError, KeyError, TypeError):
            pass
    make_ade20k(data_root, overwrite=True, **DATA_PARAMS)
    return data_root, False


def chance_miou(data_root: Path) -> dict:
    """mIoU of two chance predictors on the validation labels, over the
    classes present there (mmseg's ``reduce_zero_label``: value 0 is
    ignored, value ``k`` is class ``k - 1``).

    Returns:
        dict: ``classes`` (present class indices), ``majority`` (the most
        frequent class everywhere), ``uniform`` (a present class drawn at
        random for each pixel, expected IoU), ``chance`` (the larger), in %.
    """
    import numpy as np
    from PIL import Image

    counts = np.zeros(256, dtype=np.int64)
    for png in sorted((data_root / 'annotations' / 'validation').glob(
            '*.png')):
        counts += np.bincount(
            np.asarray(Image.open(png)).ravel(), minlength=256)
    counts = counts[1:]  # drop 0 ('other', ignored)
    classes = np.flatnonzero(counts)
    p = counts[classes] / counts[classes].sum()
    k = len(classes)
    majority = p.max() / k
    # Uniform guess among k classes: intersection p/k, union p + 1/k - p/k.
    uniform = np.mean((p / k) / (p + 1 / k - p / k))
    return dict(
        classes=classes.tolist(),
        majority=100 * float(majority),
        uniform=100 * float(uniform),
        chance=100 * float(max(majority, uniform)))


def demo_options(data_root: Path, args: argparse.Namespace) -> list[str]:
    """``--cfg-options`` of the example: data root, sizes, schedule."""
    crop = args.crop
    warmup = max(1, args.iters // 10)
    return [
        # No ImageNet checkpoint: random initialisation.
        'model.backbone.init_cfg=None',
        f'train_dataloader.dataset.data_root={data_root}',
        f'val_dataloader.dataset.data_root={data_root}',
        f'test_dataloader.dataset.data_root={data_root}',
        # Random resize around the 128x128 image size, crop, pad to crop.
        'train_dataloader.dataset.pipeline.2.scale=(128,128)',
        f'train_dataloader.dataset.pipeline.3.crop_size=({crop},{crop})',
        f'model.data_preprocessor.size=({crop},{crop})',
        'val_dataloader.dataset.pipeline.1.scale=(128,128)',
        'test_dataloader.dataset.pipeline.1.scale=(128,128)',
        'model.test_cfg.mode=whole',
        f'train_dataloader.batch_size={args.batch}',
        'train_dataloader.num_workers=1',
        'val_dataloader.num_workers=1',
        'test_dataloader.num_workers=1',
        # Short schedule: warm-up over the first tenth, then poly decay.
        f'train_cfg.max_iters={args.iters}',
        f'train_cfg.val_interval={args.iters}',
        f'default_hooks.checkpoint.interval={args.iters}',
        'default_hooks.checkpoint.max_keep_ckpts=1',
        'default_hooks.logger.interval=20',
        f'optim_wrapper.optimizer.lr={args.lr}',
        'param_scheduler.0.start_factor=0.01',
        f'param_scheduler.0.end={warmup}',
        f'param_scheduler.1.begin={warmup}',
        f'param_scheduler.1.end={args.iters}',
    ]


def main(argv: list[str] | None = None) -> int:
    """Run the example; return the exit status."""
    args = parse_args(argv)
    if args.batch < 2:
        print('--batch must be at least 2.', file=sys.stderr)
        return 2
    start = time.perf_counter()
    times = {}
    work_dir = Path(args.work_dir).resolve()

    from fcaformer_mm.utils import collect_env, format_env_report
    env = collect_env()
    problems = stack_problems(env)
    if problems:
        print(format_env_report(env))
        print(f'\nmissing or broken: {", ".join(problems)}; run '
              '`python3 tools/install.py` again and read its messages.',
              file=sys.stderr)
        return 1
    if args.report_only:
        print(format_env_report(env))
        return 0

    _banner('1/5  Synthetic ADE20K')
    t = time.perf_counter()
    data_root, reused = prepare_data(work_dir / 'data' /
                                     'ADEChallengeData2016')
    chance = chance_miou(data_root)
    times['data'] = time.perf_counter() - t
    print(f'{"reused" if reused else "wrote"} {data_root} '
          f'({DATA_PARAMS["num_train"]} training and '
          f'{DATA_PARAMS["num_val"]} validation images, '
          f'{DATA_PARAMS["size"][0]}x{DATA_PARAMS["size"][1]}); classes '
          f'present (after reduce_zero_label): {chance["classes"]}')

    opts = demo_options(data_root, args)
    _banner(f'2/5  Training {CONFIG.name} on the CPU: {args.iters} '
            f'iterations, batch {args.batch}, {args.crop}x{args.crop} '
            'crops')
    print('Training from scratch: model.backbone.init_cfg=None, no '
          'ImageNet checkpoint is loaded (real runs give one with '
          '--cfg-options model.backbone.init_cfg.checkpoint=PATH).')
    print('Command: python tools/train.py '
          f'{CONFIG.relative_to(REPO)} --cpu --work-dir '
          f'{work_dir / "train"} --overwrite --cfg-options '
          f'{" ".join(opts)}\n',
          flush=True)
    t = time.perf_counter()
    try:
        run_tool('train.py', [
            str(CONFIG), '--cpu', '--work-dir',
            str(work_dir / 'train'), '--overwrite', '--cfg-options'
        ] + opts)
        checkpoint = work_dir / 'train' / f'iter_{args.iters}.pth'
        times['train'] = time.perf_counter() - t

        _banner('3/5  Evaluation (tools/test.py, mmseg IoUMetric)')
        t = time.perf_counter()
        run_tool('test.py', [
            str(CONFIG),
            str(checkpoint), '--cpu', '--work-dir',
            str(work_dir / 'test'), '--cfg-options'
        ] + opts)
        metrics = last_test_metrics(work_dir / 'test')
        times['test'] = time.perf_counter() - t

        _banner('4/5  Parameters and MACs '
                '(tools/analysis_tools/get_flops.py)')
        t = time.perf_counter()
        if args.skip_flops:
            print('skipped (--skip-flops)')
        else:
            run_tool('analysis_tools/get_flops.py', [
                str(CONFIG), '--cfg-options', 'model.backbone.init_cfg=None'
            ])
        times['flops'] = time.perf_counter() - t
    except ToolError as err:
        print(f'\n{err}; its output above says why.', file=sys.stderr)
        return 1

    _banner('5/5  Environment')
    print(format_env_report(env))

    miou = float(metrics['mIoU'])
    ratio = miou / chance['chance']
    ok = ratio >= MIN_RATIO_TO_CHANCE
    total = time.perf_counter() - start
    _banner('Result')
    print(f'mIoU on the {DATA_PARAMS["num_val"]} validation images: '
          f'{miou:.2f} (aAcc {float(metrics["aAcc"]):.2f}, mAcc '
          f'{float(metrics["mAcc"]):.2f})')
    print('  mmseg averages over the classes that are in the labels or in '
          f'the predictions; the labels hold {len(chance["classes"])}.')
    print(f'Chance over those classes: {chance["chance"]:.2f} mIoU (the '
          f'most frequent class everywhere: {chance["majority"]:.2f}; a '
          f'class at random: {chance["uniform"]:.2f}).')
    print(f'The model reaches {ratio:.1f}x chance: '
          + ('clearly above chance.' if ok else
             f'NOT clearly above chance (needs {MIN_RATIO_TO_CHANCE}x).'))
    print('Wall time: ' + ', '.join(f'{k} {v:.0f} s'
                                    for k, v in times.items()) +
          f'; total {total:.0f} s ({total / 60:.1f} min).')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
