"""Remake ``tests/data/fcaformer_golden.pth`` by running the official code.

The golden fixtures are outputs of the official FcaFormer code
(``hkzhang-git/FcaFormer``) in eval mode, fp32, for deterministic weights
and inputs (:mod:`fcaformer_mm.analysis.seeded`). The tests load the same
weights into this package's ``FcaFormer`` and compare
(``tests/test_models/test_backbones/test_fcaformer.py::test_golden_outputs``).
The committed fixtures are meant to stay as they are; this script shows how
they were made and remakes them from a local checkout of the official code,
which the tests themselves never need.

Each case records the arch and keyword arguments of our ``FcaFormer`` that
it checks, the input's shape, seed and sum (to tell a changed random
generator apart from a changed model), the official outputs, and where
they came from:

0. the official dense model ``FcaFormer_SH_512`` with the dims of L1 and
   dense outputs 16 wide, at an odd size;
1. ``FcaFormer_SH_512`` with its defaults (the dense L2), batch 2;
2. the official classifier ``fcaformer_l2`` at 224x224:
   ``norm_head(forward_features(x))``, our ``out_type='avg_featmap'``;
3. ``FcaFormer_SH_512`` with the dims of L1 at an odd size: the output of
   ``layer_3`` averaged, then a LayerNorm with the seeded ``norm_head``
   weights (the classifier's head on the dense model's padded windows).

Example:
    git clone https://github.com/hkzhang-git/FcaFormer /tmp/FcaFormer
    pip install einops
    python tools/misc/make_golden_fixtures.py /tmp/FcaFormer \\
        --out /tmp/fcaformer_golden.pth
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import types
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .official import load_official_classifier, load_official_dense
from .seeded import seeded_input, seeded_state_dict, shapes_of

DEFAULT_OUT = (Path(__file__).resolve().parents[2] / 'tests' / 'data' /
               'fcaformer_golden.pth')
WEIGHT_SEED = 2023
NOTE = ('Outputs of the official FcaFormer code (hkzhang-git/FcaFormer) in '
        'eval mode, fp32, with weights from seeded_state_dict(shapes, '
        'weight_seed) and inputs from seeded_input(shape, input_seed) in '
        'tests/test_models/test_backbones/test_fcaformer.py.')
#: Arguments of the official dense model for the dims of L1 (those of the
#: official classifier's ``fcaformer_l1``).
DENSE_L1 = dict(
    dims=[64, 128, 192, 320], depths=[2, 2, 6, 2], num_heads=[0, 0, 6, 10])

#: Runs one case: (official dense class, official classifier module,
#: input) -> outputs.
Runner = Callable[[type, types.ModuleType, torch.Tensor], list[torch.Tensor]]


def _seeded(model: nn.Module) -> nn.Module:
    model.load_state_dict(
        seeded_state_dict(shapes_of(model), WEIGHT_SEED), strict=True)
    return model.eval()


def dense_maps(**kwargs) -> Runner:
    """The dense outputs of ``FcaFormer_SH_512(**kwargs)``."""

    def run(dense: type, classifier: types.ModuleType,
            x: torch.Tensor) -> list[torch.Tensor]:
        return list(_seeded(dense(**kwargs))(x))

    return run


def classifier_features(builder: str) -> Runner:
    """``norm_head(forward_features(x))`` of an official classifier."""

    def run(dense: type, classifier: types.ModuleType,
            x: torch.Tensor) -> list[torch.Tensor]:
        model = _seeded(getattr(classifier, builder)())
        return [model.norm_head(model.forward_features(x))]

    return run


def dense_pooled(**kwargs) -> Runner:
    """``layer_3`` of ``FcaFormer_SH_512(**kwargs)`` averaged over the map,
    then LayerNorm (eps 1e-5, as the classifier's ``norm_head``) with the
    seeded ``norm_head`` weights."""

    def run(dense: type, classifier: types.ModuleType,
            x: torch.Tensor) -> list[torch.Tensor]:
        model = _seeded(dense(**kwargs))
        seen = []
        handle = model.layer_3.register_forward_hook(
            lambda module, args, out: seen.append(out))
        try:
            model(x)
        finally:
            handle.remove()
        pooled = seen[0].mean(dim=(2, 3))
        dim = pooled.shape[1]
        norm = seeded_state_dict(
            {'norm_head.weight': (dim, ), 'norm_head.bias': (dim, )},
            WEIGHT_SEED)
        return [
            F.layer_norm(pooled, (dim, ), norm['norm_head.weight'],
                         norm['norm_head.bias'])
        ]

    return run


#: (case without outputs, how the official code makes its outputs).
CASES: tuple[tuple[dict, Runner], ...] = (
    (dict(arch='l1', kwargs=dict(out_channels=[16, 16, 16, 16]),
          input_shape=[1, 3, 65, 97], input_seed=11,
          source=('official FcaFormer_SH_512 (semantic-segmentation/'
                  'backbone/fcaformer.py), dims of L1, seg_head_dims '
                  '[16]*4')),
     dense_maps(**DENSE_L1, seg_head_dims=[16, 16, 16, 16])),
    (dict(arch='l2', kwargs={}, input_shape=[2, 3, 32, 32], input_seed=12,
          source='official FcaFormer_SH_512, default (L2) arguments'),
     dense_maps()),
    (dict(arch='l2', kwargs=dict(out_type='avg_featmap'),
          input_shape=[1, 3, 224, 224], input_seed=13,
          source=('official classifier fcaformer_l2 (image_classification/'
                  'models/fcaformer.py): norm_head(forward_features(x))')),
     classifier_features('fcaformer_l2')),
    (dict(arch='l1', kwargs=dict(out_type='avg_featmap'),
          input_shape=[1, 3, 65, 97], input_seed=14,
          source=('official FcaFormer_SH_512 (L1 dims): layer_3 output '
                  'averaged, then LayerNorm with the seeded norm_head '
                  'weights')),
     dense_pooled(**DENSE_L1)),
)


def make_fixtures(official_path: str | Path) -> dict:
    """Run every case on the official code at ``official_path``.

    Args:
        official_path (str | Path): A local checkout of the official code.

    Returns:
        dict: ``weight_seed``, ``note`` and ``cases`` as in the committed
        ``tests/data/fcaformer_golden.pth``.
    """
    dense = load_official_dense(official_path)
    classifier = load_official_classifier(official_path)
    cases = []
    for spec, runner in CASES:
        x = seeded_input(spec['input_shape'], spec['input_seed'])
        with torch.no_grad():
            outputs = runner(dense, classifier, x)
        cases.append(
            dict(
                arch=spec['arch'],
                kwargs=spec['kwargs'],
                input_shape=spec['input_shape'],
                input_seed=spec['input_seed'],
                input_sum=x.double().sum().item(),
                # Own storage: a saved view would carry its whole base.
                outputs=[out.detach().clone() for out in outputs],
                source=spec['source']))
    return dict(weight_seed=WEIGHT_SEED, note=NOTE, cases=cases)


def save_atomically(obj: dict, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename: an
    interrupted run never leaves a partial fixture."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.',
                               suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def max_differences(new: dict, old: dict) -> list[float | None]:
    """Per case, the largest absolute difference of the outputs (None where
    the cases do not correspond)."""
    diffs: list[float | None] = []
    for index, case in enumerate(new['cases']):
        if index >= len(old.get('cases', [])):
            diffs.append(None)
            continue
        before = old['cases'][index]['outputs']
        if len(before) != len(case['outputs']) or any(
                a.shape != b.shape for a, b in zip(before, case['outputs'])):
            diffs.append(None)
            continue
        diffs.append(
            max((a - b).abs().max().item()
                for a, b in zip(case['outputs'], before)))
    return diffs


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The options of ``tools/misc/make_golden_fixtures.py``."""
    parser = argparse.ArgumentParser(
        description='Remake the golden fixtures of the FcaFormer tests by '
        'running the official code (hkzhang-git/FcaFormer) from a local '
        'checkout.')
    parser.add_argument(
        'official_checkout', metavar='OFFICIAL_CHECKOUT',
        help='local checkout of https://github.com/hkzhang-git/FcaFormer '
        '(needs einops installed)')
    parser.add_argument(
        '--out', type=Path, default=DEFAULT_OUT,
        help=f'where to write the fixtures (default: {DEFAULT_OUT})')
    parser.add_argument(
        '--force', action='store_true',
        help='replace --out if it exists (the committed fixtures are meant '
        'to stay as they are)')
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line of ``tools/misc/make_golden_fixtures.py``."""
    args = parse_args(argv)
    out: Path = args.out
    if out.exists() and not args.force:
        print(f'error: {out} exists; pass --force to replace it, or choose '
              'another --out.', file=sys.stderr)
        return 1
    if out.exists() and out.is_dir():
        print(f'error: --out {out} is a directory; give a file path.',
              file=sys.stderr)
        return 1
    try:
        fixtures = make_fixtures(args.official_checkout)
    except (FileNotFoundError, ImportError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    previous = (torch.load(out, map_location='cpu', weights_only=True)
                if out.exists() else None)
    save_atomically(fixtures, out)
    diffs = (max_differences(fixtures, previous)
             if previous is not None else [None] * len(fixtures['cases']))
    for index, (case, diff) in enumerate(zip(fixtures['cases'], diffs)):
        shapes = ', '.join(str(list(o.shape)) for o in case['outputs'])
        line = f'case {index}: {case["arch"]} {case["kwargs"]} -> {shapes}'
        if diff is not None:
            line += f'  (max |difference| to the replaced file {diff:.3g})'
        print(line)
    print(f'wrote {out}')
    return 0
