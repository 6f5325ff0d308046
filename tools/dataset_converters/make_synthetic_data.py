#!/usr/bin/env python3
"""Write a small synthetic ADE20K, COCO or ImageNet on the real layout.

The images are shapes on a textured background whose class follows their
shape and colour, so a small model learns them in minutes: enough to try a
config end to end (training, evaluation, checkpoints) without the real data.
Results on them say nothing about the real benchmarks.

Examples:
    python3 tools/dataset_converters/make_synthetic_data.py ade20k \\
        --out data/ade/ADEChallengeData2016
    python3 tools/dataset_converters/make_synthetic_data.py coco \\
        --out /tmp/coco --num-train 32 --size 256 320
    python3 tools/dataset_converters/make_synthetic_data.py imagenet \\
        --out data/imagenet --num-classes 4

A folder that is not empty is refused; ``--overwrite`` replaces a synthetic
dataset written there before (and nothing else).

The generators (:mod:`fcaformer_mm.datasets.synthetic`) need numpy and
Pillow only: the tool also runs where torch or mmengine is not installed.
"""
import argparse
import sys
from pathlib import Path
from typing import List, Optional

from fcaformer_mm.datasets.synthetic import (
    IMAGENET_CLASSES,
    cfg_options,
    make_ade20k,
    make_coco,
    make_imagenet,
)

# Per dataset: default counts and size, and the config it fits.
_DEFAULTS = {
    'ade20k': dict(num_train=40, num_val=10, size=(128, 128),
                   config='configs/upernet_fcaformer_l2_ade20k.py'),
    'coco': dict(num_train=16, num_val=8, size=(128, 160),
                 config='configs/mask_rcnn_fcaformer_l2_fpn_3x_coco.py'),
    'imagenet': dict(num_train=16, num_val=4, size=(64, 64),
                     config='configs/fcaformer_l2_in1k.py'),
}


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv (list[str], optional): The arguments. Defaults to
            ``sys.argv[1:]``.

    Returns:
        argparse.Namespace: The parsed arguments.
    """
    parser = argparse.ArgumentParser(
        description='Write a small synthetic dataset on the real layout of '
        'ADE20K, COCO or ImageNet.')
    parser.add_argument('dataset', choices=sorted(_DEFAULTS))
    parser.add_argument(
        '--out', required=True,
        help='dataset root to write (the config\'s data_root), e.g. '
        'data/ade/ADEChallengeData2016, data/coco, data/imagenet')
    parser.add_argument(
        '--num-train', type=int,
        help='training images (per class for imagenet); defaults: '
        'ade20k 40, coco 16, imagenet 16')
    parser.add_argument(
        '--num-val', type=int,
        help='validation images (per class for imagenet); defaults: '
        'ade20k 10, coco 8, imagenet 4')
    parser.add_argument(
        '--size', type=int, nargs=2, metavar=('H', 'W'),
        help='image height and width; defaults: ade20k 128 128, '
        'coco 128 160, imagenet 64 64')
    parser.add_argument(
        '--num-classes', type=int, default=4,
        help=f'imagenet only: number of classes, 1 to '
        f'{len(IMAGENET_CLASSES)} (default 4)')
    parser.add_argument(
        '--no-meta', action='store_true',
        help='imagenet only: do not write meta/{train,val}.txt (the stock '
        'ImageNet dataset then expects 1000 class folders)')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    parser.add_argument(
        '--overwrite', action='store_true',
        help='replace a synthetic dataset written to --out before (files '
        'that the generator did not write are never touched)')
    return parser.parse_args(argv)


def _count_files(root: Path) -> int:
    return sum(1 for p in root.rglob('*')
               if p.is_file() and not p.name.startswith('.'))


def main(argv: Optional[List[str]] = None) -> int:
    """Write the dataset and say how to use it.

    Args:
        argv (list[str], optional): The arguments. Defaults to
            ``sys.argv[1:]``.

    Returns:
        int: The exit status.
    """
    args = parse_args(argv)
    defaults = _DEFAULTS[args.dataset]
    num_train = (defaults['num_train']
                 if args.num_train is None else args.num_train)
    num_val = defaults['num_val'] if args.num_val is None else args.num_val
    size = tuple(args.size) if args.size else defaults['size']
    common = dict(size=size, seed=args.seed, overwrite=args.overwrite)
    try:
        if args.dataset == 'ade20k':
            root = make_ade20k(args.out, num_train, num_val, **common)
            what = (f'{num_train} training and {num_val} validation images '
                    'with label maps (6 ADE20K classes)')
        elif args.dataset == 'coco':
            root = make_coco(args.out, num_train, num_val, **common)
            what = (f'{num_train} train2017 and {num_val} val2017 images '
                    'with instance annotations (person, car, bus, dog)')
        else:
            root = make_imagenet(
                args.out, args.num_classes, num_train, num_val,
                with_meta=not args.no_meta, **common)
            what = (f'{args.num_classes} classes x ({num_train} train + '
                    f'{num_val} val) images'
                    + ('' if args.no_meta else ', meta/{train,val}.txt'))
    except (FileExistsError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    root_str = str(root)
    print(f'Wrote a synthetic {args.dataset} to {root_str}: {what}, '
          f'{_count_files(root)} files, {size[0]}x{size[1]} pixels, '
          f'seed {args.seed}.')
    print(f'Point a config at it, e.g. {defaults["config"]}:')
    print('  --cfg-options ' + ' '.join(cfg_options(args.dataset, root_str)))
    if args.dataset == 'imagenet':
        n = args.num_classes
        print(f'The labels 0..{n - 1} are those of the same classes in '
              'ImageNet-1k, so the 1000-class head fits as it is. For a '
              f'{n}-class head:')
        print('  --cfg-options '
              + ' '.join(cfg_options(args.dataset, root_str, n)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
