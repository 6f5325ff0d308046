"""Compatibility layer between the OpenMMLab 2.0 releases and torch >= 2.6.

Since torch 2.6, :func:`torch.load` defaults to ``weights_only=True``: it
unpickles only tensors, containers, primitive types and the classes on an
allow-list. mmengine 0.10.7 saves its training state with objects outside that
list (``HistoryBuffer`` in the message hub, with its statistics methods
pickled as ``getattr(HistoryBuffer, 'min')``, and numpy arrays and scalars in
the logged scalars), so ``Runner.resume`` and ``load_checkpoint`` fail with
``UnpicklingError: Weights only load failed``.

:func:`apply` adds exactly those classes to torch's allow-list with
:func:`torch.serialization.add_safe_globals`. It does not switch the safety
off: ``getattr`` is answered by a stand-in that fetches nothing but
HistoryBuffer's statistics methods, and a checkpoint that pickles anything
else (for example a callable that
runs a shell command) is still refused by ``torch.load``.

The layer is applied once, on ``import fcaformer_mm``. It is a no-op for
torch builds without ``add_safe_globals`` (torch < 2.4), whose ``torch.load``
does not default to ``weights_only=True`` anyway.
"""
from __future__ import annotations

import argparse
import inspect
import pickle
from typing import Any, Callable

import numpy as np
import torch

__all__ = ['apply', 'safe_global_names', 'is_applied']

_APPLIED = False
_HISTORY_BUFFER_STATISTICS = ('min', 'max', 'mean', 'current')


def _numpy_safe_globals() -> list[Callable | tuple[Callable, str]]:
    """Numpy objects that checkpoints of numpy 1.x and 2.x refer to.

    Pickles name numpy's internals by module path, and that path moved from
    ``numpy.core`` (numpy 1.x) to ``numpy._core`` (numpy 2.x); both spellings
    are registered so checkpoints written under either numpy load under both.
    """
    core = getattr(np, '_core', None) or np.core
    multiarray = core.multiarray
    entries: list[Callable | tuple[Callable, str]] = [np.ndarray, np.dtype]
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        entries.append((multiarray._reconstruct, f'{module}._reconstruct'))
        entries.append((multiarray.scalar, f'{module}.scalar'))
    # Concrete dtype classes (numpy >= 1.25), e.g. numpy.dtypes.Float64DType
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        for name in dir(dtypes):
            obj = getattr(dtypes, name)
            if isinstance(obj, type) and issubclass(obj, np.dtype):
                entries.append((obj, f'numpy.dtypes.{name}'))
    return entries


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """A ``getattr`` that can only fetch HistoryBuffer's statistics methods.

    ``HistoryBuffer.__getstate__`` stores its statistics methods
    (``min``, ``max``, ``mean``, ``current``, ...), which pickle writes as
    ``getattr(HistoryBuffer, 'min')``. Allow-listing the real builtin
    ``getattr`` would let a checkpoint reach any attribute of any allowed
    object; this stand-in is registered under the name ``builtins.getattr``
    for ``torch.load`` only, and refuses everything but those methods.
    """
    from mmengine.logging.history_buffer import HistoryBuffer
    method = inspect.getattr_static(HistoryBuffer, name, None)
    # The four built-in statistics, plus any a user registered with
    # ``HistoryBuffer.register_statistics`` before loading.
    registered = (name in _HISTORY_BUFFER_STATISTICS or
                  HistoryBuffer._statistics_methods.get(name) is method)
    if (obj is not HistoryBuffer or not inspect.isfunction(method)
            or not registered):
        raise pickle.UnpicklingError(
            f'fcaformer_mm refuses getattr({obj!r}, {name!r}) in a '
            'checkpoint: only the statistics methods of mmengine\'s '
            'HistoryBuffer may be fetched this way.')
    return method


def _mmengine_safe_globals() -> list[Callable | tuple[Callable, str]]:
    """Classes that mmengine's ``Runner.save_checkpoint`` writes."""
    try:
        from mmengine.logging.history_buffer import HistoryBuffer
    except ImportError:  # mmengine absent: nothing of it to allow.
        return []
    return [HistoryBuffer, (_history_buffer_getattr, 'builtins.getattr')]


def _safe_globals() -> list[Callable | tuple[Callable, str]]:
    # ``argparse.Namespace`` is a plain attribute container; training scripts
    # of the DeiT/ConvNeXt family (the official FcaFormer one among them)
    # store their arguments in checkpoints as one.
    return (_numpy_safe_globals() + _mmengine_safe_globals() +
            [argparse.Namespace])


def safe_global_names() -> list[str]:
    """Names of the globals that :func:`apply` allows in ``torch.load``.

    Returns:
        list[str]: Fully qualified names, e.g.
        ``'mmengine.logging.history_buffer.HistoryBuffer'``.
    """
    names = []
    for entry in _safe_globals():
        if isinstance(entry, tuple):
            names.append(entry[1])
        else:
            names.append(f'{entry.__module__}.{entry.__qualname__}')
    return names


def is_applied() -> bool:
    """Whether :func:`apply` has registered the allow-list in this process."""
    return _APPLIED


def apply() -> dict[str, Any]:
    """Make mmengine checkpoints loadable under ``weights_only=True``.

    Idempotent: calling it again does nothing more.

    Returns:
        dict: ``{'applied': bool, 'reason': str, 'globals': list[str]}``
        describing what was done.
    """
    global _APPLIED
    add_safe_globals = getattr(torch.serialization, 'add_safe_globals', None)
    if add_safe_globals is None:
        return dict(
            applied=False,
            reason=f'torch {torch.__version__} has no add_safe_globals and '
            'does not default torch.load to weights_only=True',
            globals=[])
    if not _APPLIED:
        add_safe_globals(_safe_globals())
        _APPLIED = True
    return dict(
        applied=True,
        reason='allow-listed for torch.load(weights_only=True)',
        globals=safe_global_names())
