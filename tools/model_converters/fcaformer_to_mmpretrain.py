"""Convert an official FcaFormer classification checkpoint for mmpretrain.

The official training script (``hkzhang-git/FcaFormer``,
``image_classification``) saves a dict with the entries ``model``,
``model_ema``, ``optimizer``, ``epoch``, ... This tool writes the OpenMMLab
layout instead::

    {'state_dict': {'backbone.<official name>': ...,   # FcaFormer backbone
                    'head.fc.weight': ..., 'head.fc.bias': ...},  # Linear
     'meta': {...}}

so that the checkpoint loads into an mmpretrain ``ImageClassifier`` with
``backbone=dict(type='FcaFormer', out_type='avg_featmap')`` and a
``LinearClsHead``, and into any FcaFormer backbone with
``init_cfg=dict(type='Pretrained', checkpoint=DST, prefix='backbone.')``.
The backbone keeps the official parameter names, so no tensor is renamed
besides the prefix.

Example::

    python tools/model_converters/fcaformer_to_mmpretrain.py \\
        fcaformer_l2.pth fcaformer-l2_in1k.pth --ema
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys
import tempfile
from collections.abc import Mapping, Sequence

import torch

from fcaformer_mm.models.utils.checkpoint import select_state_dict

# (embed_dims, depths) of the official variants, for the metadata only.
KNOWN_ARCHS = {
    ((64, 128, 192, 320), (2, 2, 6, 2)): 'fcaformer-l1',
    ((96, 192, 320, 480), (2, 2, 7, 2)): 'fcaformer-l2',
    ((96, 192, 320, 512), (3, 6, 12, 3)): 'fcaformer-l3',
    ((128, 256, 512, 768), (3, 6, 12, 3)): 'fcaformer-l4',
}
CLASSIFIER_KEYS = {
    'head.weight': 'head.fc.weight',
    'head.bias': 'head.fc.bias',
}
STEM_KEY = 'patch_embed.seq.0.c.weight'


class ConversionError(RuntimeError):
    """The source checkpoint cannot be converted."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Convert an official FcaFormer classification checkpoint '
        'to the OpenMMLab (mmpretrain) layout.')
    parser.add_argument('src', help='official checkpoint (.pth)')
    parser.add_argument('dst', help='output checkpoint (.pth)')
    parser.add_argument(
        '--ema',
        action='store_true',
        help="convert the EMA weights ('model_ema') instead of 'model'; the "
        'official ImageNet results are those of the EMA weights')
    parser.add_argument(
        '--force', action='store_true', help='overwrite an existing DST')
    return parser.parse_args(argv)


def load_official(path: str) -> Mapping:
    """Load a checkpoint without running arbitrary pickled code."""
    # The official script stores its argparse.Namespace in the checkpoint;
    # it is a plain attribute container, safe to allow in weights-only mode.
    add_safe_globals = getattr(torch.serialization, 'add_safe_globals', None)
    if add_safe_globals is not None:
        add_safe_globals([argparse.Namespace])
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # unpickling errors have no common base class
        raise ConversionError(f'Cannot read {path}: {err}') from err


def select_weights(ckpt: Mapping, use_ema: bool) -> tuple[dict, str]:
    """Return the state dict to convert and the entry it came from."""
    if isinstance(ckpt, Mapping) and 'state_dict' in ckpt:
        raise ConversionError(
            "The checkpoint has a 'state_dict' entry: it is already in the "
            'OpenMMLab layout.')
    key = 'model_ema' if use_ema else 'model'
    try:
        weights = select_state_dict(ckpt, key, 'The checkpoint')
    except KeyError as err:
        raise ConversionError(
            f'The checkpoint has no {key!r} entry (entries: '
            f'{sorted(map(str, ckpt))}).' +
            (' It was trained without EMA; drop --ema.' if use_ema else '')
        ) from err
    except TypeError as err:
        raise ConversionError(str(err)) from err
    if STEM_KEY not in weights:
        raise ConversionError(
            f"{key!r} holds no FcaFormer weights (no {STEM_KEY!r}).")
    return weights, key


def detect_arch(weights: Mapping[str, torch.Tensor]) -> str | None:
    """Name of the official variant the weights belong to, if any."""
    try:
        dims = tuple(
            int(weights[f'layer_{i}.blocks.0.{name}'].shape[0])
            for i, name in ((0, 'dwconv.weight'), (1, 'dwconv.weight'),
                            (2, 'qkv.bias'), (3, 'qkv.bias')))
    except KeyError:
        return None
    dims = dims[:2] + (dims[2] // 3, dims[3] // 3)
    depths = tuple(
        len({
            k.split('.')[2]
            for k in weights if k.startswith(f'layer_{i}.blocks.')
        }) for i in range(4))
    return KNOWN_ARCHS.get((dims, depths))


def convert(weights: Mapping[str, torch.Tensor]) -> dict:
    """Map official names to the OpenMMLab ``ImageClassifier`` names."""
    converted = {}
    for key, value in weights.items():
        if key in CLASSIFIER_KEYS:
            converted[CLASSIFIER_KEYS[key]] = value
        else:
            converted[f'backbone.{key}'] = value
    return converted


def save_atomically(obj: dict, dst: str) -> None:
    """Write ``dst`` only once the whole file is written."""
    directory = osp.dirname(osp.abspath(dst))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix='.part')
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, dst)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not osp.isfile(args.src):
        sys.exit(f'error: source checkpoint {args.src} does not exist.')
    if osp.exists(args.dst) and not args.force:
        sys.exit(f'error: {args.dst} exists; pass --force to overwrite it.')
    if osp.abspath(args.src) == osp.abspath(args.dst):
        sys.exit('error: SRC and DST are the same file.')
    try:
        ckpt = load_official(args.src)
        weights, key = select_weights(ckpt, args.ema)
    except ConversionError as err:
        sys.exit(f'error: {err}')

    state_dict = convert(weights)
    head = weights.get('head.weight')
    epoch = ckpt.get('epoch')
    meta = {
        'converted_from': osp.basename(args.src),
        'state_dict_key': key,
        'arch': detect_arch(weights),
        'num_classes': None if head is None else int(head.shape[0]),
        'epoch': epoch if isinstance(epoch, (int, str)) else None,
        'converter': 'fcaformer_mm tools/model_converters/'
        'fcaformer_to_mmpretrain.py',
    }
    save_atomically({'state_dict': state_dict, 'meta': meta}, args.dst)
    print(f'Converted {len(state_dict)} tensors ({key!r}, arch '
          f"{meta['arch'] or 'custom'}, {meta['num_classes']} classes) "
          f'from {args.src} to {args.dst}.')
    return 0


if __name__ == '__main__':
    sys.exit(main())
