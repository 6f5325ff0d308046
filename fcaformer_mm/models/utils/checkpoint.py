"""Finding FcaFormer weights in a checkpoint, and loading them.

One place for what the backbone's ``init_cfg`` Pretrained and the converter
``tools/model_converters/fcaformer_to_mmpretrain.py`` both need to know
about checkpoint layouts: official ones (``model``, ``model_ema``, ...),
OpenMMLab ones (``state_dict``, ``backbone.`` prefix) and plain state dicts.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from mmengine.logging import print_log
from mmengine.runner.checkpoint import CheckpointLoader
from torch import nn

from ...compat import CheckpointError


class StateDictError(CheckpointError, TypeError):
    """A checkpoint, or the entry that should hold its weights, is not a
    dict of weights."""


def select_state_dict(ckpt: object,
                      state_dict_key: str | None = None,
                      source: str = 'the checkpoint',
                      entries: Sequence[str] = ('state_dict', 'model')
                      ) -> dict[str, torch.Tensor]:
    """Pick the state dict out of a loaded checkpoint.

    The one place that knows checkpoint layouts, for the backbone's
    ``Pretrained`` init, the converter and the checks of
    :mod:`fcaformer_mm.utils.checkpoint_check`.

    Args:
        ckpt (object): What ``torch.load`` returned.
        state_dict_key (str, optional): The entry holding the state dict,
            e.g. ``'model_ema'`` for the EMA weights of an official
            checkpoint. Defaults to None: the first of ``entries`` that the
            checkpoint has, else the checkpoint itself.
        source (str): Name of the checkpoint in error messages.
        entries (Sequence[str]): Entries looked for without
            ``state_dict_key``. Defaults to ``('state_dict', 'model')``:
            OpenMMLab, then official (timm-style) checkpoints; mmengine's
            Runner looks for ``('state_dict',)`` only.

    Returns:
        dict[str, torch.Tensor]: The tensors of the state dict, with the
        ``module.`` prefix (a model saved inside DistributedDataParallel)
        removed from every key that has it, as mmengine does.

    Raises:
        StateDictError: The checkpoint or its entry is not a dict (a
            ``TypeError`` and a ``CheckpointError``).
        KeyError: ``state_dict_key`` is not in the checkpoint.
    """
    if not isinstance(ckpt, Mapping):
        raise StateDictError(f'{source} holds an object of type '
                             f'{type(ckpt).__name__}, not a dict of weights.')
    if state_dict_key is not None:
        if state_dict_key not in ckpt:
            raise KeyError(f'{source} has no entry {state_dict_key!r}; its '
                           f'entries are {sorted(map(str, ckpt))}.')
        state_dict = ckpt[state_dict_key]
    else:
        found = [key for key in entries if key in ckpt]
        state_dict = ckpt[found[0]] if found else ckpt
    if not isinstance(state_dict, Mapping):
        raise StateDictError(
            f'The state dict taken from {source} is of type '
            f'{type(state_dict).__name__}, not a dict of weights.')
    return {
        re.sub(r'^module\.', '', str(key)): value
        for key, value in state_dict.items() if isinstance(value, torch.Tensor)
    }


def match_prefix(state_dict: dict[str, torch.Tensor],
                 own_keys: set[str],
                 prefix: str | None,
                 source: str,
                 model_name: str = 'the model') -> dict[str, torch.Tensor]:
    """Keep the keys of a module with ``own_keys`` names.

    With ``prefix``, the keys that start with it are kept and stripped (when
    no key has it, the keys are used as they are: official checkpoints have
    no prefix). Without it, a whole OpenMMLab model's ``backbone.`` keys
    are taken when no key matches as it is.

    Raises:
        RuntimeError: No key belongs to the module.
    """
    if prefix:
        if any(key.startswith(prefix) for key in state_dict):
            state_dict = {
                key[len(prefix):]: value
                for key, value in state_dict.items() if key.startswith(prefix)
            }
        else:
            print_log(
                f'No key of {source} starts with {prefix!r}; loading its '
                'keys as they are.',
                logger='current')
    elif not any(key in own_keys for key in state_dict) and any(
            key.startswith('backbone.') for key in state_dict):
        state_dict = {
            key[len('backbone.'):]: value
            for key, value in state_dict.items()
            if key.startswith('backbone.')
        }
    if not any(key in own_keys for key in state_dict):
        sample = ', '.join(list(state_dict)[:5])
        raise RuntimeError(f'No key of {source} belongs to {model_name} '
                           f'(prefix={prefix!r}); its first keys are: '
                           f'{sample}.')
    return state_dict


def load_pretrained(module: nn.Module,
                    checkpoint: str,
                    prefix: str | None = None,
                    map_location: str = 'cpu',
                    state_dict_key: str | None = None) -> None:
    """Load an official, OpenMMLab or plain checkpoint into ``module``.

    Missing and unexpected keys are logged; shape mismatches raise.

    Args:
        module (nn.Module): The model to load into.
        checkpoint (str): Path or URL of the checkpoint (read with mmengine's
            ``CheckpointLoader``).
        prefix (str, optional): See :func:`match_prefix`. Defaults to None.
        map_location (str): Where to load the tensors. Defaults to ``'cpu'``.
        state_dict_key (str, optional): See :func:`select_state_dict`.
            Defaults to None.

    Raises:
        FileNotFoundError: The checkpoint file does not exist.
        KeyError: ``state_dict_key`` is not in the checkpoint.
        RuntimeError: No key of the checkpoint belongs to the model, or some
            shapes differ (each such key is listed with both shapes).
    """
    ckpt = CheckpointLoader.load_checkpoint(
        checkpoint, map_location=map_location, logger='current')
    state_dict = select_state_dict(ckpt, state_dict_key, checkpoint)
    own = module.state_dict()
    name = type(module).__name__
    state_dict = match_prefix(state_dict, set(own), prefix, checkpoint, name)
    if is_deployed_state_dict(state_dict):
        raise RuntimeError(
            f'{checkpoint} holds the weights of a deployed FcaFormer '
            '(switch_to_deploy() folded their Conv-BN layers and layer '
            'scales: "...c.bias" keys), which cannot be unfolded into '
            f'{name}: use the checkpoint saved before deploying.')
    mismatched = [
        f'  {key}: checkpoint {tuple(value.shape)}, model '
        f'{tuple(own[key].shape)}' for key, value in state_dict.items()
        if key in own and tuple(value.shape) != tuple(own[key].shape)
    ]
    if mismatched:
        raise RuntimeError(
            f'Shape mismatch between {checkpoint} and {name} (check arch, '
            'window_sizes and out_channels):\n' + '\n'.join(mismatched))

    result = module.load_state_dict(state_dict, strict=False)
    print_log(
        f'Loaded {len(state_dict) - len(result.unexpected_keys)} tensors of '
        f'{name} from {checkpoint}.',
        logger='current')
    if result.missing_keys:
        print_log(
            'Missing keys (left at their initial values): ' +
            ', '.join(result.missing_keys),
            logger='current',
            level=logging.WARNING)
    if result.unexpected_keys:
        print_log(
            'Unexpected keys (ignored): ' + ', '.join(result.unexpected_keys),
            logger='current',
            level=logging.WARNING)


_PRETRAINED_KEYS = ('checkpoint', 'prefix', 'map_location', 'state_dict_key')


def split_init_cfg(
        init_cfg: dict | list[dict] | None) -> tuple[dict | None, list[dict]]:
    """The arguments of :func:`load_pretrained` given by a ``Pretrained``
    entry of ``init_cfg`` (None without one), and the other entries.

    Raises:
        ValueError: The ``Pretrained`` entry has unknown keys or no
            checkpoint.
    """
    cfgs = init_cfg or []
    cfgs = [cfgs] if isinstance(cfgs, Mapping) else list(cfgs)
    others = [dict(c) for c in cfgs if c.get('type') != 'Pretrained']
    pretrained = [dict(c) for c in cfgs if c.get('type') == 'Pretrained']
    if not pretrained:
        return None, others
    kwargs = pretrained[-1]
    kwargs.pop('type')
    unknown = sorted(set(kwargs) - set(_PRETRAINED_KEYS))
    if unknown:
        raise ValueError(f'Unknown keys {unknown} in the Pretrained init_cfg; '
                         f'allowed: {", ".join(_PRETRAINED_KEYS)}.')
    if kwargs.get('checkpoint') is None:
        raise ValueError(
            "init_cfg of type 'Pretrained' needs a checkpoint path or URL, "
            'e.g. with --cfg-options model.backbone.init_cfg.checkpoint=PATH; '
            'remove the init_cfg to start from a random initialisation.')
    return kwargs, others


def is_deployed_state_dict(state_dict: Mapping[str, Any],
                           prefix: str = '') -> bool:
    """Whether the FcaFormer weights under ``prefix`` in ``state_dict`` come
    from a deployed model: ``switch_to_deploy()`` folds each Conv-BN into a
    convolution with a bias (``...c.bias``), which the undeployed layout
    never has."""
    return any(
        key.startswith(prefix) and key.endswith('.c.bias')
        for key in state_dict)
