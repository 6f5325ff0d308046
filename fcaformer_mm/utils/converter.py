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

The source is read with ``torch.load(weights_only=True)`` through the
loaders of ``fcaformer_mm.compat`` (a local file or a URL); a file that is
not a checkpoint, or one that pickles anything unsafe, stops the tool with a
message saying so. The weights must fit the FcaFormer classifier whose
architecture they describe (widths, depths, heads and window sizes read
from them): a missing or misshapen backbone or head weight stops the tool
with the list of missing and unexpected keys, unless ``--allow-partial``
is given. The output is written atomically and with the permissions of
the umask, as ``torch.save`` writes files.

The command line is ``tools/model_converters/fcaformer_to_mmpretrain.py``
(:func:`main`).
"""
from __future__ import annotations

import argparse
import math
import os
import os.path as osp
import secrets
import sys
from collections.abc import Mapping, Sequence

import torch

from fcaformer_mm.models.utils.checkpoint import (
    is_deployed_state_dict,
    select_state_dict,
)

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
    parser.add_argument(
        '--allow-partial',
        action='store_true',
        help='convert even if backbone or head weights are missing')
    return parser.parse_args(argv)


def load_official(path: str) -> Mapping:
    """Load a checkpoint (local path or URL) without running pickled code.

    mmengine's checkpoint loaders, as registered by ``fcaformer_mm.compat``:
    ``torch.load(weights_only=True)`` with the package's allow-list (which
    holds the ``argparse.Namespace`` of the official training script).
    """
    from mmengine.runner.checkpoint import CheckpointLoader

    from fcaformer_mm.compat import CheckpointError
    try:
        return CheckpointLoader.load_checkpoint(
            path, map_location='cpu', logger='current')
    except CheckpointError as err:
        raise ConversionError(str(err)) from None


def infer_arch(weights: Mapping[str, torch.Tensor]) -> dict:
    """The FcaFormer architecture that official weights describe.

    Returns:
        dict: ``arch`` (``embed_dims``, ``depths``, ``num_heads``) and
        ``window_sizes``, as ``FcaFormer`` takes them.

    Raises:
        ConversionError: A stage has no block, or its width, heads or
            window size cannot be read.
    """
    depths, dims = [], []
    width_keys = {
        0: ('norm.weight', 'dwconv.weight', 'pwconv2.bias'),
        2: ('norm1.weight', 'proj.bias', 'norm2.weight'),
    }
    for i in range(4):
        prefix = f'layer_{i}.blocks.'
        blocks = {
            int(k[len(prefix):].split('.')[0])
            for k in weights
            if k.startswith(prefix) and k[len(prefix):].split('.')[0].isdigit()
        }
        if not blocks:
            raise ConversionError(
                f'The weights hold no block of layer_{i}: they are not those '
                'of a whole FcaFormer classifier.')
        depths.append(max(blocks) + 1)
        names = width_keys[0 if i < 2 else 2]
        width = next((int(weights[f'{prefix}{j}.{n}'].shape[0])
                      for j in sorted(blocks) for n in names
                      if f'{prefix}{j}.{n}' in weights), None)
        if width is None:
            raise ConversionError(f'The width of layer_{i} cannot be read '
                                  f'(none of {names} in its blocks).')
        dims.append(width)
    heads, windows = [], []
    for i in (2, 3):
        bias = next((weights[k] for k in sorted(weights)
                     if k.startswith(f'layer_{i}.blocks.')
                     and k.endswith('.attention_biases')), None)
        side = math.isqrt(int(bias.shape[1])) if bias is not None else 0
        if bias is None or side * side != int(bias.shape[1]):
            raise ConversionError(
                f'The heads and window size of layer_{i} cannot be read '
                '(no attention_biases of shape heads x window**2).')
        heads.append(int(bias.shape[0]))
        windows.append(side)
    return dict(
        arch=dict(embed_dims=dims, depths=depths, num_heads=heads),
        window_sizes=tuple(windows))


def expected_state(weights: Mapping[str, torch.Tensor]) -> dict:
    """Keys and shapes of the mmpretrain classifier the converted weights
    are for: an FcaFormer of the architecture they describe, and a linear
    head (``head.fc``)."""
    from fcaformer_mm.models.backbones.fcaformer import FcaFormer
    arch = infer_arch(weights)
    with torch.device('meta'):
        backbone = FcaFormer(
            arch['arch'],
            window_sizes=arch['window_sizes'],
            out_type='avg_featmap')
    expected = {f'backbone.{k}': v for k, v in backbone.state_dict().items()}
    head = weights.get('head.weight')
    num_classes = 0 if head is None else int(head.shape[0])
    dim = arch['arch']['embed_dims'][-1]
    expected['head.fc.weight'] = torch.empty(
        num_classes, dim, device='meta')
    expected['head.fc.bias'] = torch.empty(num_classes, device='meta')
    return expected


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
    if is_deployed_state_dict(weights):
        raise ConversionError(
            f'{key!r} holds deployed FcaFormer weights (switch_to_deploy() '
            'folded their Conv-BN layers and layer scales: "...c.bias" '
            'keys), which cannot be unfolded: convert the checkpoint saved '
            'before deploying.')
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
    """Write ``dst`` only once the whole file is written.

    The temporary file is created with mode 0o666 less the umask, as
    ``torch.save`` and ``open`` create files (``tempfile.mkstemp`` would
    make it 0o600 whatever the umask).
    """
    directory = osp.dirname(osp.abspath(dst))
    os.makedirs(directory, exist_ok=True)
    while True:
        tmp = osp.join(directory,
                       f'.{osp.basename(dst)}.{secrets.token_hex(4)}.part')
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(obj, f)
        os.replace(tmp, dst)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import fcaformer_mm  # noqa: F401  (the safe checkpoint loaders)
    from fcaformer_mm.compat import CheckpointError, check_checkpoint_file
    from fcaformer_mm.utils.checkpoint_check import ensure_fit
    from fcaformer_mm.utils.entrypoint import same_file

    if '://' not in args.src and same_file(args.src, args.dst):
        # By identity: a link to SRC, or SRC through a linked directory.
        sys.exit(f'error: DST {args.dst} is the same file as SRC {args.src}; '
                 'writing it would replace the official checkpoint. Give '
                 'another DST.')
    if osp.isdir(args.dst):
        sys.exit(f'error: DST {args.dst} is a directory; give the path of '
                 'the file to write, e.g. '
                 f'{osp.join(args.dst, "fcaformer_mmpretrain.pth")}.')
    if osp.exists(args.dst) and not args.force:
        sys.exit(f'error: {args.dst} exists; pass --force to overwrite it.')
    if '://' not in args.src:
        try:  # a missing, empty or text file, or a directory
            check_checkpoint_file(args.src)
        except CheckpointError as err:
            sys.exit(f'error: {err}')
    try:
        ckpt = load_official(args.src)
        weights, key = select_weights(ckpt, args.ema)
        state_dict = convert(weights)
        fit = ensure_fit(expected_state(weights), state_dict,
                         f'{args.src} ({key!r})', args.allow_partial)
    except (ConversionError, CheckpointError) as err:
        sys.exit(f'error: {err}')
    if fit.missing:
        print(f'warning: {len(fit.missing)} weights are missing '
              '(--allow-partial): ' + ', '.join(fit.missing[:10]) +
              (' ...' if len(fit.missing) > 10 else ''), file=sys.stderr)

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
