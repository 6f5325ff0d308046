"""Compare this package's FcaFormer with the official code, side by side.

Both models get the same deterministic weights
(:func:`fcaformer_mm.analysis.seeded.seeded_state_dict`, over the official
model's state dict, loaded with ``strict=True``) and the same input, in
eval mode, fp32, without autograd. Ours runs as built (``eager``) and as a
copy after ``switch_to_deploy()`` (``deploy``: Conv-BN and layer scales
folded).

Cases: the official dense model ``FcaFormer_SH_512`` for every ``--archs``
at every ``--sizes`` (batch 1; all four outputs, ``out_channels`` those of
our preset), and the official classifiers ``fcaformer_l1`` ...
``fcaformer_l4`` at 224x224 (``norm_head(forward_features(x))`` against
``out_type='avg_featmap'``). The table gives the largest absolute
difference over all outputs of a case, per form, and the largest absolute
official output for scale. :func:`main` (``tools/misc/compare_official.py``)
exits with 1 if any difference exceeds ``--tolerance``.
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
import types
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from fcaformer_mm.models.backbones.fcaformer import FcaFormer

from .official import load_official_classifier, load_official_dense
from .seeded import seeded_input, seeded_state_dict, shapes_of

ARCHS = ('l1', 'l2', 'l3', 'l4')
#: The forms of our model that are compared.
PATHS = ('eager', 'deploy')
DEFAULT_SIZES = ('224x224', '512x512', '513x701', '64x64')
#: Arguments of the official dense model per arch: those of the official
#: classifier builders ``fcaformer_l1`` ... ``fcaformer_l4``.
OFFICIAL_ARCHS = {
    'l1': dict(dims=[64, 128, 192, 320], depths=[2, 2, 6, 2],
               num_heads=[0, 0, 6, 10]),
    'l2': dict(dims=[96, 192, 320, 480], depths=[2, 2, 7, 2],
               num_heads=[0, 0, 10, 15]),
    'l3': dict(dims=[96, 192, 320, 512], depths=[3, 6, 12, 3],
               num_heads=[0, 0, 10, 16]),
    'l4': dict(dims=[128, 256, 512, 768], depths=[3, 6, 12, 3],
               num_heads=[0, 0, 16, 24]),
}


def max_abs_difference(ours: Sequence[torch.Tensor],
                       theirs: Sequence[torch.Tensor]) -> float:
    """Largest absolute difference over corresponding outputs."""
    if len(ours) != len(theirs):
        raise RuntimeError(f'{len(ours)} outputs against {len(theirs)}.')
    diff = 0.
    for a, b in zip(ours, theirs):
        if a.shape != b.shape:
            raise RuntimeError(f'Output shapes differ: {tuple(a.shape)} '
                               f'against {tuple(b.shape)}.')
        diff = max(diff, (a.float() - b.float()).abs().max().item())
    return diff


def run_our_paths(model: FcaFormer,
                  x: torch.Tensor) -> dict[str, tuple[torch.Tensor, ...]]:
    """Outputs of ``model`` (eval mode) in every form of :data:`PATHS`."""
    outs = {}
    with torch.no_grad():
        outs['eager'] = model(x)
        deployed = copy.deepcopy(model).switch_to_deploy()
        outs['deploy'] = deployed(x)
    return outs


def compare_dense(dense: type, arch: str, size: tuple[int, int],
                  weight_seed: int, input_seed: int) -> dict:
    """One dense case: the official ``FcaFormer_SH_512`` against ours."""
    ours = FcaFormer(arch).eval()
    theirs = dense(**OFFICIAL_ARCHS[arch],
                   seg_head_dims=list(ours.out_channels)).eval()
    weights = seeded_state_dict(shapes_of(theirs), weight_seed)
    theirs.load_state_dict(weights, strict=True)
    ours.load_state_dict(weights, strict=True)
    x = seeded_input((1, 3, *size), input_seed)
    with torch.no_grad():
        expected = tuple(theirs(x))
    return _row('dense', arch, size, expected, run_our_paths(ours, x))


def compare_classifier(classifier: types.ModuleType, arch: str,
                       weight_seed: int, input_seed: int) -> dict:
    """One classifier case at 224x224: ``norm_head(forward_features(x))``
    of the official classifier against ``out_type='avg_featmap'``."""
    theirs: nn.Module = getattr(classifier, f'fcaformer_{arch}')().eval()
    ours = FcaFormer(arch, out_type='avg_featmap').eval()
    weights = seeded_state_dict(shapes_of(theirs), weight_seed)
    theirs.load_state_dict(weights, strict=True)
    # Ours has no classification Linear (that is mmpretrain's head).
    ours.load_state_dict(
        {k: v for k, v in weights.items() if not k.startswith('head.')},
        strict=True)
    x = seeded_input((1, 3, 224, 224), input_seed)
    with torch.no_grad():
        expected = (theirs.norm_head(theirs.forward_features(x)), )
    return _row('classifier', arch, (224, 224), expected,
                run_our_paths(ours, x))


def _row(kind: str, arch: str, size: tuple[int, int],
         expected: tuple[torch.Tensor, ...],
         outs: dict[str, tuple[torch.Tensor, ...]]) -> dict:
    return dict(
        model=kind,
        arch=arch,
        size=list(size),
        official_max_abs=max(o.abs().max().item() for o in expected),
        max_abs_diff={
            path: max_abs_difference(out, expected)
            for path, out in outs.items()
        })


def format_table(rows: list[dict], tolerance: float) -> str:
    """The rows as a table, with the largest difference per form."""
    head = (f'{"model":<11}{"arch":<5}{"input":>9}{"max|official|":>15}' +
            ''.join(f'{p:>12}' for p in PATHS) + '  within')
    lines = [head, '-' * len(head)]
    for row in rows:
        size = 'x'.join(str(s) for s in row['size'])
        diffs = row['max_abs_diff']
        ok = all(d <= tolerance for d in diffs.values())
        lines.append(
            f'{row["model"]:<11}{row["arch"]:<5}{size:>9}'
            f'{row["official_max_abs"]:>15.3f}' +
            ''.join(f'{diffs[p]:>12.2e}' for p in PATHS) +
            f'  {"yes" if ok else "NO"}')
    worst = {p: max(r['max_abs_diff'][p] for r in rows) for p in PATHS}
    lines.append('-' * len(head))
    lines.append(f'{"largest":<40}' +
                 ''.join(f'{worst[p]:>12.2e}' for p in PATHS))
    lines.append(f'(max |ours - official| over all outputs; tolerance '
                 f'{tolerance:g})')
    return '\n'.join(lines)


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'{text!r} is not a size; write HxW, e.g. 512x512.') from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f'{text!r}: sides must be >= 1.')
    return h, w


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The options of ``tools/misc/compare_official.py``."""
    parser = argparse.ArgumentParser(
        description='Compare FcaFormer with the official code '
        '(hkzhang-git/FcaFormer) on seeded weights, eager and deployed.')
    parser.add_argument(
        'official_checkout', metavar='OFFICIAL_CHECKOUT',
        help='local checkout of https://github.com/hkzhang-git/FcaFormer '
        '(needs einops installed)')
    parser.add_argument('--archs', nargs='+', default=list(ARCHS),
                        choices=ARCHS)
    parser.add_argument(
        '--sizes', nargs='+', type=_size, default=None, metavar='HxW',
        help=f'input sizes of the dense model (default: '
        f'{" ".join(DEFAULT_SIZES)})')
    parser.add_argument('--no-classifier', action='store_true',
                        help='leave out the classifiers at 224x224')
    parser.add_argument('--weight-seed', type=int, default=2023)
    parser.add_argument('--input-seed', type=int, default=0)
    parser.add_argument('--tolerance', type=float, default=1e-4,
                        help='largest difference accepted (default: 1e-4, '
                        'that of the golden-fixture tests)')
    parser.add_argument('--threads', type=int, default=None,
                        help='intra-op CPU threads (torch.set_num_threads)')
    parser.add_argument('--json', type=Path, default=None,
                        help='also write the rows as JSON')
    args = parser.parse_args(argv)
    if args.sizes is None:
        args.sizes = [_size(s) for s in DEFAULT_SIZES]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """The command line of ``tools/misc/compare_official.py``."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        dense = load_official_dense(args.official_checkout)
        classifier = load_official_classifier(args.official_checkout)
    except (FileNotFoundError, ImportError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    print(f'torch {torch.__version__}, {platform.machine()}, CPU capability '
          f'{torch.backends.cpu.get_cpu_capability()}, '
          f'{torch.get_num_threads()} threads', flush=True)
    rows = []
    start = time.perf_counter()
    for arch in args.archs:
        for size in args.sizes:
            rows.append(compare_dense(dense, arch, size, args.weight_seed,
                                      args.input_seed))
            print(f'[{time.perf_counter() - start:6.0f} s] dense {arch} '
                  f'{size[0]}x{size[1]}', file=sys.stderr, flush=True)
    if not args.no_classifier:
        for arch in args.archs:
            rows.append(compare_classifier(classifier, arch,
                                           args.weight_seed,
                                           args.input_seed))
            print(f'[{time.perf_counter() - start:6.0f} s] classifier '
                  f'{arch}', file=sys.stderr, flush=True)
    print(format_table(rows, args.tolerance))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))
        print(f'wrote {args.json}')
    over = [r for r in rows
            if any(d > args.tolerance for d in r['max_abs_diff'].values())]
    return 1 if over else 0
