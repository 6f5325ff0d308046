"""Does a checkpoint fit a model? One check for every tool that scores or
exports weights.

mmengine loads checkpoints with ``strict=False``: keys that do not match are
logged and left at their initial values, so ``tools/test.py`` with the
checkpoint of another model prints a score of random weights and exits 0.
:func:`check_fit` compares a checkpoint's state dict with a model's and
:func:`ensure_fit` stops when

* no weight of the model is in the checkpoint, or
* a weight has another shape in the checkpoint, or
* a required weight is missing: every weight of the backbone, the neck and
  the heads (all of them for a bare backbone),

unless a partial load is asked for (``allow_partial=True``; a checkpoint
with no weight of the model, or with weights of other shapes, is never
accepted). Keys known to be harmless are set apart, not reported as
problems: BatchNorm's ``num_batches_tracked`` counters, and the EMA copies
that EMA hooks keep next to the weights (``ema_*`` buffers of mmcv 1.x's
``EMAHook``, ``module.*`` keys of an ``AveragedModel`` and its ``steps``
counter).

``tools/test.py`` runs the check through :class:`CheckpointFitHook` on the
checkpoint the Runner loads; ``tools/deployment/export_onnx.py`` and
``tools/model_converters/fcaformer_to_mmpretrain.py`` call
:func:`ensure_fit` directly.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from mmengine.hooks import Hook
from torch import nn

from ..compat import CheckpointError
from ..models.utils.checkpoint import (
    is_deployed_state_dict,
    select_state_dict,
)

__all__ = [
    'CheckpointFit', 'CheckpointFitError', 'CheckpointFitHook',
    'check_fit', 'ensure_fit', 'unwrap_model',
    'is_required_key', 'load_fitting_weights'
]

#: Model keys that may be absent from a checkpoint.
HARMLESS_MISSING = (re.compile(r'(^|\.)num_batches_tracked$'), )
#: Checkpoint keys that may be absent from the model: EMA copies.
HARMLESS_UNEXPECTED = (
    re.compile(r'(^|\.)num_batches_tracked$'),
    re.compile(r'^ema_'),
    re.compile(r'^module\.'),
    re.compile(r'^(steps|n_averaged)$'),
)
#: Top-level parts of a model whose weights a checkpoint must hold.
REQUIRED_PARTS = re.compile(r'^(backbone|neck|[A-Za-z0-9_]*head)$')
#: How many keys of each kind and part a report lists.
MAX_LISTED = 8


class CheckpointFitError(CheckpointError, RuntimeError):
    """The checkpoint does not fit the model."""


@dataclass
class CheckpointFit:
    """How a checkpoint's state dict fits a model's.

    Attributes:
        matched (list[str]): Model keys found in the checkpoint with the
            model's shape.
        missing (list[str]): Model keys absent from the checkpoint (not the
            harmless ones).
        required_missing (list[str]): The part of ``missing`` that must be
            there (backbone, neck, heads).
        unexpected (list[str]): Checkpoint keys the model does not have
            (not the harmless ones).
        mismatched (list[str]): ``key: checkpoint (shape), model (shape)``.
        harmless (list[str]): Keys set apart as harmless.
    """
    matched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    required_missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    harmless: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every required weight loads with its shape."""
        return bool(self.matched) and not (self.required_missing
                                           or self.mismatched)

    def problems(self, allow_partial: bool = False) -> list[str]:
        """Why the checkpoint does not fit; empty when it does."""
        found = []
        if not self.matched:
            found.append('no weight of the model is in the checkpoint')
        if self.mismatched:
            found.append(f'{len(self.mismatched)} weights have another '
                         'shape in the checkpoint')
        if self.required_missing and not allow_partial:
            found.append(f'{len(self.required_missing)} weights of the '
                         'backbone, neck or heads are missing')
        return found

    def report(self) -> str:
        """The keys, by kind and by top-level part of the model (at most
        :data:`MAX_LISTED` keys of each part)."""

        def listed(title: str, keys: list[str]) -> list[str]:
            if not keys:
                return []
            parts: dict[str, list[str]] = {}
            for key in keys:
                parts.setdefault(key.split('.', 1)[0], []).append(key)
            lines = [f'{title}: {len(keys)}']
            for part, part_keys in parts.items():
                more = len(part_keys) - MAX_LISTED
                lines.append(f'  {part} ({len(part_keys)}): ' +
                             ', '.join(part_keys[:MAX_LISTED]) +
                             (f', ... and {more} more' if more > 0 else ''))
            return lines

        lines = [f'matched weights: {len(self.matched)}']
        if self.mismatched:
            more = len(self.mismatched) - MAX_LISTED
            lines += [f'weights of other shapes: {len(self.mismatched)}']
            lines += [f'  {k}' for k in self.mismatched[:MAX_LISTED]]
            lines += [f'  ... and {more} more'] if more > 0 else []
        lines += listed('missing keys (in the model, not in the checkpoint)',
                        self.missing)
        lines += listed(
            'unexpected keys (in the checkpoint, not in the model)',
            self.unexpected)
        if self.harmless:
            lines.append('set apart as harmless (num_batches_tracked, EMA '
                         f'copies): {len(self.harmless)}')
        return '\n'.join(lines)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside DDP-style wrappers and mmengine's TTA models, the
    module that mmengine's ``load_state_dict`` fills."""
    from mmengine.model import BaseTTAModel, is_model_wrapper
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    return model


def is_required_key(key: str, parts: set[str]) -> bool:
    """Whether a missing model key stops a load.

    Args:
        key (str): The model key.
        parts (set[str]): The model's top-level children that hold weights.

    Returns:
        bool: True for keys of the backbone, the neck and the heads; for a
        model without any of those (a bare backbone), for every key.
    """
    if not any(REQUIRED_PARTS.match(p) for p in parts):
        return True
    return bool(REQUIRED_PARTS.match(key.split('.', 1)[0]))


def check_fit(model: nn.Module | Mapping[str, Any],
              state_dict: Mapping[str, torch.Tensor],
              is_required: Callable[[str, set[str]], bool] = is_required_key
              ) -> CheckpointFit:
    """Compare a checkpoint's state dict with a model.

    Args:
        model (nn.Module | Mapping): The model (wrappers are unwrapped), or
            its state dict (values with a ``shape``).
        state_dict (Mapping): The checkpoint's tensors (see
            :func:`~fcaformer_mm.models.utils.checkpoint.select_state_dict`).
        is_required: Which missing keys count, see :func:`is_required_key`.

    Returns:
        CheckpointFit: The comparison.
    """
    if isinstance(model, nn.Module):
        own = unwrap_model(model).state_dict()
    else:
        own = dict(model)
    parts = {key.split('.', 1)[0] for key in own}
    fit = CheckpointFit()
    for key, value in own.items():
        if key not in state_dict:
            if any(p.search(key) for p in HARMLESS_MISSING):
                fit.harmless.append(key)
            else:
                fit.missing.append(key)
                if is_required(key, parts):
                    fit.required_missing.append(key)
        elif tuple(state_dict[key].shape) != tuple(value.shape):
            fit.mismatched.append(
                f'{key}: checkpoint {tuple(state_dict[key].shape)}, model '
                f'{tuple(value.shape)}')
        else:
            fit.matched.append(key)
    for key in state_dict:
        if key not in own:
            if any(p.search(key) for p in HARMLESS_UNEXPECTED):
                fit.harmless.append(key)
            else:
                fit.unexpected.append(key)
    return fit


def ensure_fit(model: nn.Module | Mapping[str, Any],
               state_dict: Mapping[str, torch.Tensor],
               source: str,
               allow_partial: bool = False,
               partial_flag: str = '--allow-partial') -> CheckpointFit:
    """:func:`check_fit`, raising when the checkpoint does not fit.

    Args:
        model, state_dict: As for :func:`check_fit`.
        source (str): How to name the checkpoint in the error.
        allow_partial (bool): Accept missing weights (the checkpoint must
            still hold some weights of the model, all of the model's shape).
            Defaults to False.
        partial_flag (str): The option that sets ``allow_partial``, named in
            the error. Defaults to ``'--allow-partial'``.

    Returns:
        CheckpointFit: The comparison, when the checkpoint fits.

    Raises:
        CheckpointFitError: Naming the problems, listing the missing and
            unexpected keys, and saying what to do.
    """
    if is_deployed_state_dict(state_dict):
        raise CheckpointFitError(
            f'The checkpoint {source} holds deployed FcaFormer weights '
            '(switch_to_deploy() folded their Conv-BN layers and layer '
            'scales: "...c.bias" keys), which no config builds and which '
            'cannot be unfolded: use the checkpoint saved before deploying '
            '(tools/test.py --deploy deploys it for testing).')
    fit = check_fit(model, state_dict)
    problems = fit.problems(allow_partial)
    if problems:
        name = type(unwrap_model(model)).__name__ if isinstance(
            model, nn.Module) else 'the model'
        hint = ('Check that the checkpoint belongs to this config (the '
                'same model, arch and number of classes).')
        if fit.matched and not fit.mismatched and not allow_partial:
            hint += (f' To use it knowingly with the missing weights left at '
                     f'their initial values, pass {partial_flag}.')
        raise CheckpointFitError(
            f'The checkpoint {source} does not fit {name}: '
            f'{"; ".join(problems)}.\n{fit.report()}\n{hint}')
    return fit


def load_fitting_weights(model: nn.Module,
                         checkpoint: str,
                         allow_partial: bool = False,
                         partial_flag: str = '--allow-partial',
                         map_location: str = 'cpu') -> CheckpointFit:
    """Load a checkpoint into a model after :func:`ensure_fit`.

    The checkpoint is read through mmengine's ``CheckpointLoader`` (so with
    the loaders of :mod:`fcaformer_mm.compat`). Its state dict is the
    ``state_dict`` entry, else the ``model`` entry (official checkpoints),
    else the checkpoint itself; when none of its keys is a key of the model
    but some start with ``backbone.``, those are loaded without the prefix
    (a whole model's checkpoint into its backbone).

    Returns:
        CheckpointFit: The comparison.

    Raises:
        CheckpointFitError: See :func:`ensure_fit`.
    """
    from mmengine.runner.checkpoint import CheckpointLoader
    loaded = CheckpointLoader.load_checkpoint(
        checkpoint, map_location=map_location, logger='current')
    state = select_state_dict(loaded, source=checkpoint)
    target = unwrap_model(model)
    own = target.state_dict()
    if not any(k in own for k in state) and any(
            k.startswith('backbone.') for k in state):
        state = {
            k[len('backbone.'):]: v
            for k, v in state.items() if k.startswith('backbone.')
        }
    fit = ensure_fit(target, state, checkpoint, allow_partial, partial_flag)
    target.load_state_dict(
        {k: v for k, v in state.items() if k in own}, strict=False)
    return fit


class CheckpointFitHook(Hook):
    """Stop the Runner when the checkpoint it loads does not fit its model.

    Runs :func:`ensure_fit` in ``after_load_checkpoint``, which the Runner
    calls before it puts the weights into the model; register it with
    ``priority='VERY_HIGH'`` so that it runs before hooks that use the
    weights (``EMAHook``).

    Args:
        allow_partial (bool): See :func:`ensure_fit`. Defaults to False.
        source (str, optional): How to name the checkpoint. Defaults to the
            Runner's ``load_from``.
        partial_flag (str): See :func:`ensure_fit`.
    """

    priority = 'VERY_HIGH'

    def __init__(self,
                 allow_partial: bool = False,
                 source: str | None = None,
                 partial_flag: str = '--allow-partial') -> None:
        self.allow_partial = allow_partial
        self.source = source
        self.partial_flag = partial_flag
        self.fit: CheckpointFit | None = None

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        source = self.source or str(runner._load_from)
        # What mmengine's Runner loads: 'state_dict', else the checkpoint.
        state = select_state_dict(checkpoint, source=source,
                                  entries=('state_dict', ))
        self.fit = ensure_fit(runner.model, state, source, self.allow_partial,
                              self.partial_flag)
        name = type(unwrap_model(runner.model)).__name__
        notes = [f'{len(self.fit.matched)} weights loaded']
        if self.fit.missing:
            notes.append(f'{len(self.fit.missing)} missing, left at their '
                         'initial values: ' + ', '.join(self.fit.missing[:5])
                         + (' ...' if len(self.fit.missing) > 5 else ''))
        if self.fit.unexpected:
            notes.append(f'{len(self.fit.unexpected)} unexpected, ignored')
        runner.logger.info(f'The checkpoint {source} fits {name}: ' +
                           '; '.join(notes) + '.')
