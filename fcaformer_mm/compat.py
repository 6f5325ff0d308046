"""Compatibility layer between the OpenMMLab 2.0 releases and torch >= 2.6.

Since torch 2.6, :func:`torch.load` defaults to ``weights_only=True``: it
unpickles only tensors, containers, primitive types and the classes on an
allow-list. mmengine 0.10.7 saves its training state with objects outside that
list (``HistoryBuffer`` in the message hub, with its statistics methods
pickled as ``getattr(HistoryBuffer, 'min')``, and numpy arrays and scalars in
the logged scalars), so ``Runner.resume`` and ``load_checkpoint`` fail with
``UnpicklingError: Weights only load failed``.

:func:`checkpoint_globals` allows exactly those names, and only while one
of this module's loaders reads a checkpoint: torch's allow-list is left as it
is, so a plain ``torch.load`` elsewhere in the process behaves as without the
package. Each name is answered by a stand-in that checks what the file gives
it, so the safety is not switched off: ``numpy.dtype`` accepts plain numeric
and bool dtypes only (no object, structured or void dtype, no forged flags),
``numpy.ndarray`` exactly as many bytes as its shape needs, ``HistoryBuffer``
two numeric histories (never its class attribute ``_statistics_methods``),
``getattr`` nothing but the name of a HistoryBuffer statistics method. The
stand-ins are swapped for the real objects once ``torch.load`` returns. A
checkpoint that pickles anything else (for example a callable that runs a
shell command) is still refused.

The allow-list alone does not reach every checkpoint: mmengine reads
``http(s)://``, ``open-mmlab://``, ``torchvision://`` and ``mmcls://``
checkpoints through ``torch.hub.load_state_dict_from_url``, which calls
``torch.load(..., weights_only=False)``, and its local loader relies on
torch's default, which an environment variable can switch off. :func:`apply`
therefore also registers loaders of this module with mmengine's
``CheckpointLoader`` for every scheme mmengine knows (local paths, URLs,
``open-mmlab://``, ``torchvision://``/``modelzoo://``, ``mmcls://``,
``pavi://`` and the ``s3://``/``petrel://`` file backends). Each reads with
``torch.load(weights_only=True)`` and turns what is not a checkpoint (an
empty file, a text or HTML file, a directory, a damaged file) into an error
that names the file, what it is and what to do; a checkpoint that pickles
anything outside the allow-list is refused with an
:class:`UnsafeCheckpointError` that names the object. Everything that loads
through mmengine goes through them: ``init_cfg=dict(type='Pretrained')``,
``load_from``, ``--resume``, ``mmengine.runner.load_checkpoint`` and the
tools of this package.

mmengine's ``Runner.resume`` runs a checkpoint's ``meta['config']`` as
Python code (``Config.fromstring``; no pickle involved, so ``weights_only``
does not stop it). The loaders drop that string, with a log line, before
mmengine sees it: mmengine 2.x never writes it (its config is
``meta['cfg']``), so the package's own checkpoints resume as before.
``meta['cfg']`` is kept: mmengine runs it only in ``BaseInferencer`` built
with ``model=None``, which the package's APIs never do.

The loaders are registered once, on ``import fcaformer_mm``. Without
``add_safe_globals`` (torch < 2.4) the allow-list cannot be used, so those
torch builds cannot resume mmengine's training state.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import inspect
import io
import logging
import math
import os
import os.path as osp
import pickle
import re
import tarfile
import tempfile
import threading
import urllib.error
import urllib.parse
import warnings
import zipfile
from typing import IO, Any, Callable, Iterator, NoReturn

import numpy as np
import torch

__all__ = [
    'apply', 'safe_global_names', 'is_applied', 'CheckpointError',
    'UnsafeCheckpointError', 'InvalidCheckpointError',
    'CheckpointNotFoundError', 'check_checkpoint_file', 'load_checkpoint_file',
    'load_from_local', 'load_from_http', 'load_from_openmmlab',
    'load_from_torchvision', 'load_from_mmcls', 'load_from_pavi',
    'load_from_ceph', 'SCHEMES', 'checkpoint_globals', 'download_cache_path'
]

_APPLIED = False
_LOADERS: list[str] | None = None
_HISTORY_BUFFER_STATISTICS = ('min', 'max', 'mean', 'current')
#: Marks the refusals of the stand-ins below in torch's error messages.
_REFUSED = 'fcaformer_mm refuses'
#: numpy kinds a checkpoint may hold: bool, signed and unsigned integers,
#: floats and complex numbers. Everything else (objects, structured and void
#: dtypes, strings, datetimes) is refused.
_PLAIN_KINDS = frozenset('biufc')
#: Bumped by each stand-in made during a load, so that loads without any
#: numpy or mmengine object skip the walk that swaps the stand-ins out.
_STAND_INS_MADE = [0]
_GLOBALS_LOCK = threading.RLock()


def _refuse(what: str) -> NoReturn:
    raise pickle.UnpicklingError(f'{_REFUSED} {what}')


def _plain_dtype(spec: Any) -> np.dtype:
    """The numpy dtype that a pickled ``numpy.dtype(spec, ...)`` names, if
    it is a plain numeric or bool dtype."""
    if not isinstance(spec, str) or not 0 < len(spec) <= 4:
        _refuse(f'the numpy dtype spec {spec!r:.80}: only plain numeric and '
                "bool dtypes ('f4', 'i8', 'b1', ...) may be loaded")
    try:
        dtype = np.dtype(spec)
    except (TypeError, ValueError):
        _refuse(f'the numpy dtype spec {spec!r}: not a numpy dtype')
    if (dtype.kind not in _PLAIN_KINDS or dtype.hasobject
            or dtype.fields is not None or dtype.subdtype is not None):
        _refuse(f'the numpy dtype {dtype!r}: only plain numeric and bool '
                'dtypes may be loaded (objects, structured, void, string '
                'and datetime dtypes may not)')
    return dtype


class _StandIn:
    """Base of the stand-ins: counted when made (by a call or by pickle's
    ``NEWOBJ``, which skips ``__init__``), unhashable (never a dict key or
    set item), and materialized into the real object after the load."""
    __hash__ = None  # type: ignore[assignment]
    value: Any = None

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        _STAND_INS_MADE[0] += 1
        return super().__new__(cls)

    #: What the stand-in stands for, in messages.
    what = 'object'

    def materialize(self) -> Any:
        if self.value is None:
            _refuse(f'a {self.what} that the checkpoint never fills')
        return self.value


class _NumpyDtype(_StandIn):
    """Stands in for ``numpy.dtype`` while a checkpoint is unpickled.

    numpy pickles a dtype as ``numpy.dtype(spec, align, copy)`` followed by
    a ``__setstate__`` whose tuple sets the byte order, fields, item size
    and flags. Given to numpy, a forged tuple can declare an object field
    that numpy then reads as a pointer. This class accepts the spec of a
    plain numeric or bool dtype and a state that only sets its byte order;
    the load swaps it for the real dtype.
    """
    what = 'numpy dtype'
    def __init__(self, spec: Any = None, align: Any = False,
                 copy: Any = True) -> None:
        if align not in (False, 0) or copy not in (True, 1):
            _refuse(f'numpy.dtype({spec!r:.40}, align={align!r:.20}, '
                    f'copy={copy!r:.20}): not how numpy pickles a dtype')
        self.value = _plain_dtype(spec)

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (8, 9):
            _refuse(f'the numpy dtype state {state!r:.120}: not a state '
                    'that numpy writes')
        version, order, subarray, names, fields, elsize, alignment, flags = (
            state[:8])
        metadata = state[8] if len(state) == 9 else None
        if self.value is None:
            _refuse('a numpy dtype state without a dtype')
        plain = np.dtype(self.value.str)
        if (version not in (3, 4) or order not in ('<', '>', '|', '=')
                or subarray is not None or names is not None
                or fields is not None or metadata is not None
                or elsize not in (-1, plain.itemsize)
                or alignment not in (-1, plain.alignment)
                or type(flags) is not int or flags != plain.flags):
            _refuse(f'the numpy dtype state {state!r:.120} of {plain}: it '
                    'sets fields, sizes or flags that a plain numeric dtype '
                    'does not have (a forged dtype)')
        self.value = plain if order in ('|', '=') else plain.newbyteorder(
            order)


def _numpy_reconstruct(cls: Any, shape: Any, typecode: Any) -> '_NumpyArray':
    """Stands in for ``numpy.core.multiarray._reconstruct``: the empty
    ndarray that the pickle's ``__setstate__`` then fills."""
    if cls is not _NumpyArray:
        _refuse(f'_reconstruct({cls!r:.60}, ...): only numpy.ndarray itself '
                'may be rebuilt')
    return _NumpyArray()


class _NumpyArray(_StandIn):
    """Stands in for ``numpy.ndarray`` while a checkpoint is unpickled.

    Its ``__setstate__`` takes the tuple of ``ndarray.__reduce__``, checks
    the dtype (a :class:`_NumpyDtype`), the shape and that the raw bytes are
    exactly as many as the shape needs, and copies them into a new array;
    numpy's own ``__setstate__`` would trust a list of objects for an
    object dtype, or too short a list, and crash the process.
    """
    what = 'numpy array'
    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            _refuse(f'the numpy array state {state!r:.120}: not a state '
                    'that numpy writes')
        if len(state) == 5:
            if state[0] != 1:
                _refuse(f'numpy array state version {state[0]!r:.20}')
            state = state[1:]
        shape, dtype, fortran, raw = state
        if not isinstance(dtype, _NumpyDtype):
            _refuse(f'a numpy array of dtype {dtype!r:.60}: not a numpy '
                    'dtype of the checkpoint')
        if (not isinstance(shape, tuple) or len(shape) > 32 or not all(
                type(n) is int and n >= 0 for n in shape)):
            _refuse(f'the numpy array shape {shape!r:.80}')
        if type(fortran) not in (bool, int) or fortran not in (0, 1):
            _refuse(f'the numpy array order flag {fortran!r:.40}')
        if not isinstance(raw, bytes):
            _refuse(f'numpy array data of type {type(raw).__name__} (a '
                    'numeric array pickles its data as bytes)')
        count = math.prod(shape)
        dtype = dtype.materialize()
        if count * dtype.itemsize != len(raw):
            _refuse(f'a numpy array of shape {shape} and dtype {dtype} with '
                    f'{len(raw)} bytes of data ({count * dtype.itemsize} '
                    'needed)')
        order = 'F' if fortran else 'C'
        flat = np.frombuffer(raw, dtype=dtype, count=count)
        self.value = flat.reshape(shape, order=order).copy(order=order)


def _numpy_scalar(dtype: Any, data: Any = None) -> np.generic:
    """Stands in for ``numpy.core.multiarray.scalar``: a numpy scalar of a
    plain dtype from exactly ``itemsize`` bytes."""
    if not isinstance(dtype, _NumpyDtype):
        _refuse(f'a numpy scalar of dtype {dtype!r:.60}')
    value = dtype.materialize()
    if not isinstance(data, bytes) or len(data) != value.itemsize:
        _refuse(f'a numpy scalar of dtype {value} with data {data!r:.40}')
    return np.frombuffer(data, dtype=value)[0]


class _HistoryBufferState(_StandIn):
    """Stands in for mmengine's ``HistoryBuffer`` while a checkpoint is
    unpickled.

    ``HistoryBuffer.__setstate__`` merges the pickled statistics methods
    into the class attribute ``HistoryBuffer._statistics_methods``, for the
    whole process. This class keeps the logged values only (checked: two
    1-D numeric arrays of one length and a positive ``max_length``); the
    load makes a new ``HistoryBuffer`` of them, whose statistics are those
    the class has.
    """
    what = 'HistoryBuffer'
    _KEYS = frozenset(
        ('max_length', '_log_history', '_count_history', 'statistics_methods'))
    state: dict | None = None

    def __setstate__(self, state: Any) -> None:
        if (not isinstance(state, dict) or not set(state) <= self._KEYS
                or not all(isinstance(k, str) for k in state)):
            _refuse(f'the HistoryBuffer state {state!r:.120}')
        self.state = state

    def materialize(self) -> Any:
        if self.value is not None:
            return self.value
        from mmengine.logging.history_buffer import HistoryBuffer
        if self.state is None:
            _refuse('a HistoryBuffer without a state')
        state = {k: _materialize(v, {}) for k, v in self.state.items()}
        logs = state.get('_log_history', np.zeros(0))
        counts = state.get('_count_history', np.zeros(0))
        max_length = state.get('max_length', 1000000)
        if (not all(isinstance(a, np.ndarray) and a.ndim == 1 and a.dtype.kind
                    in _PLAIN_KINDS for a in (logs, counts))
                or len(logs) != len(counts) or type(max_length) is not int
                or max_length <= 0):
            _refuse(f'the HistoryBuffer state {state!r:.120}: not two 1-D '
                    'numeric histories of one length and a positive '
                    'max_length')
        self.value = HistoryBuffer(logs, counts, max_length)
        return self.value


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """A ``getattr`` that can only fetch HistoryBuffer's statistics methods.

    ``HistoryBuffer.__getstate__`` stores its statistics methods
    (``min``, ``max``, ``mean``, ``current``, ...), which pickle writes as
    ``getattr(HistoryBuffer, 'min')``. Allow-listing the real builtin
    ``getattr`` would let a checkpoint reach any attribute of any allowed
    object; this stand-in is registered under the name ``builtins.getattr``
    and refuses everything but the name of a statistics method, which it
    returns as a string (the methods themselves are the class's own).
    """
    from mmengine.logging.history_buffer import HistoryBuffer
    method = inspect.getattr_static(HistoryBuffer, name, None) if isinstance(
        name, str) else None
    registered = (name in _HISTORY_BUFFER_STATISTICS or
                  HistoryBuffer._statistics_methods.get(name) is method)
    if (obj is not _HistoryBufferState or not inspect.isfunction(method)
            or not registered):
        owner = ('HistoryBuffer' if obj is _HistoryBufferState else
                 f'{obj!r:.60}')
        _refuse(f'getattr({owner}, {name!r:.60}), and only the statistics '
                "methods of mmengine's HistoryBuffer may be fetched that way")
    return name


def _materialize(obj: Any, memo: dict[int, Any]) -> Any:
    """``obj`` with every stand-in swapped for the real object (in place
    in dicts, lists and ``argparse.Namespace``; tuples are rebuilt)."""
    key = id(obj)
    if key in memo:
        return memo[key]
    kind = type(obj)
    if isinstance(obj, _StandIn):
        memo[key] = obj.materialize()
        return memo[key]
    memo[key] = obj
    if isinstance(obj, dict):
        for k, v in list(obj.items()):
            new = _materialize(v, memo)
            if new is not v:
                obj[k] = new
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            new = _materialize(v, memo)
            if new is not v:
                obj[i] = new
    elif kind is tuple:
        items = tuple(_materialize(v, memo) for v in obj)
        if any(a is not b for a, b in zip(items, obj)):
            memo[key] = items
    elif kind is argparse.Namespace:
        _materialize(vars(obj), memo)
    return memo[key]


def _empty_bytes(*args: Any) -> bytes:
    """Stands in for ``builtins.bytes``: pickle protocol 2 writes ``b''``
    (the data of an empty numpy array) as ``bytes()``; other calls, such as
    ``bytes(10**12)``, are refused."""
    if args:
        _refuse(f'bytes{args!r:.60} in a checkpoint: only bytes() may be '
                'called')
    return b''


def _numpy_safe_globals() -> list[tuple[Callable, str]]:
    """The numpy names that checkpoints of numpy 1.x and 2.x use, each
    answered by a checking stand-in.

    Pickles name numpy's internals by module path, and that path moved from
    ``numpy.core`` (numpy 1.x) to ``numpy._core`` (numpy 2.x); both spellings
    are registered so checkpoints written under either numpy load under both.
    """
    entries: list[tuple[Callable, str]] = [(_NumpyArray, 'numpy.ndarray'),
                                           (_NumpyDtype, 'numpy.dtype')]
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        entries.append((_numpy_reconstruct, f'{module}._reconstruct'))
        entries.append((_numpy_scalar, f'{module}.scalar'))
    return entries + [(_empty_bytes, 'builtins.bytes')]


def _mmengine_safe_globals() -> list[tuple[Callable, str]]:
    """What mmengine's ``Runner.save_checkpoint`` writes."""
    return [(_HistoryBufferState,
             'mmengine.logging.history_buffer.HistoryBuffer'),
            (_history_buffer_getattr, 'builtins.getattr')]


def _safe_globals() -> list[Callable | tuple[Callable, str]]:
    # ``argparse.Namespace`` is a plain attribute container; training scripts
    # of the DeiT/ConvNeXt family (the official FcaFormer one among them)
    # store their arguments in checkpoints as one.
    return (_numpy_safe_globals() + _mmengine_safe_globals() +
            [argparse.Namespace])


def _entry_name(entry: Callable | tuple[Callable, str]) -> str:
    if isinstance(entry, tuple):
        return entry[1]
    return f'{entry.__module__}.{entry.__qualname__}'


def safe_global_names() -> list[str]:
    """Names of the globals that the package's loads allow in
    ``torch.load(weights_only=True)``.

    Each numpy and mmengine name is answered by a stand-in that checks what
    the checkpoint gives it (see :func:`checkpoint_globals`).

    Returns:
        list[str]: Fully qualified names, e.g.
        ``'mmengine.logging.history_buffer.HistoryBuffer'``.
    """
    return [_entry_name(entry) for entry in _safe_globals()]


@contextlib.contextmanager
def checkpoint_globals() -> Iterator[list[str]]:
    """Allow the package's globals in ``torch.load(weights_only=True)``
    inside this block only.

    On entry the stand-ins of :func:`safe_global_names` join torch's
    allow-list; globals the process allowed under the same names step aside
    for the block. On exit torch's allow-list is as it was, so a plain
    ``torch.load`` elsewhere behaves as without the package. The package's
    own loaders (:func:`load_checkpoint_file` and the ``load_from_*``
    loaders that serve mmengine) use it; call it yourself only around a
    ``torch.load`` whose result you pass through the package's loaders'
    checks, since the stand-ins are swapped for real objects only there.

    Yields:
        list[str]: The allowed names.

    Raises:
        RuntimeError: torch has no ``add_safe_globals`` (torch < 2.4).

    Example:
        >>> import torch
        >>> from fcaformer_mm.compat import checkpoint_globals
        >>> with checkpoint_globals() as names:
        ...     'numpy.ndarray' in names
        True
        >>> torch.serialization.get_safe_globals()
        []
    """
    serialization = torch.serialization
    if not hasattr(serialization, 'add_safe_globals'):
        raise RuntimeError(
            f'torch {torch.__version__} has no add_safe_globals: upgrade to '
            "torch >= 2.4 to load mmengine's training state with "
            'weights_only=True.')
    ours = _safe_globals()
    names = {_entry_name(entry) for entry in ours}
    with _GLOBALS_LOCK:
        saved = serialization.get_safe_globals()
        serialization.clear_safe_globals()
        serialization.add_safe_globals(
            [e for e in saved if _entry_name(e) not in names] + ours)
        try:
            yield sorted(names)
        finally:
            serialization.clear_safe_globals()
            serialization.add_safe_globals(saved)


# --------------------------------------------------------------------------
# Checkpoint loaders: every scheme of mmengine's CheckpointLoader, read with
# torch.load(weights_only=True) and with errors that say what went wrong.
# --------------------------------------------------------------------------
class CheckpointError(Exception):
    """Base of the checkpoint errors of this module; tools catch it to stop
    with the message alone."""


class UnsafeCheckpointError(CheckpointError, pickle.UnpicklingError):
    """A checkpoint pickles an object that ``torch.load(weights_only=True)``
    refuses: loading it could run code."""


class InvalidCheckpointError(CheckpointError, ValueError):
    """The file is not a readable PyTorch checkpoint: empty, text, a
    directory, another format, or damaged."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint does not exist or could not be downloaded."""


_ZIP_MAGIC = b'PK\x03\x04'
_PICKLE_PROTO = 0x80
_HEAD_BYTES = 512
_UNSAFE_PATTERNS = (
    r'GLOBAL (\S+) was not an allowed global',
    r'unsupported GLOBAL (\S+) whose module',
    r'unrecognized function (.+?)(?: which belongs to .*)?$',
    r'Can only create new object .* but got (.+)$',
    r'Can only build .* but got (.+)$',
    r'^(.+) must be imported to load',
)


def _unsafe_object_name(message: str) -> str | None:
    """The object that torch's weights-only unpickler refused, if named."""
    for line in message.splitlines()[::-1]:
        for pattern in _UNSAFE_PATTERNS:
            found = re.search(pattern, line.strip())
            if found:
                return found.group(1).strip().rstrip('.')
    return None


def _refusal(message: str) -> str | None:
    """What a stand-in of this module refused, from torch's error text."""
    for line in message.splitlines():
        if _REFUSED in line:
            return line[line.index(_REFUSED) + len(_REFUSED):].strip()
    return None


def _unpickler_problem(message: str) -> str:
    """The unpickler's own words in torch's long "Weights only load
    failed" message (an unknown opcode, a bad persistent id, ...)."""
    found = re.search(r'WeightsUnpickler error: (.+)', message)
    if found:
        return found.group(1).strip()[:300]
    lines = [line.strip() for line in message.splitlines() if line.strip()
             and 'Weights only load failed' not in line
             and 'documentation of torch.load' not in line]
    return (lines[-1] if lines else message.strip())[:300]


def _unsafe_error(source: str, path: str | None,
                  err: BaseException) -> UnsafeCheckpointError:
    where = path or 'CHECKPOINT'
    resave = (
        "python -c \"import torch; c = torch.load('" + where +
        "', map_location='cpu', weights_only=False); "
        "torch.save({'state_dict': c.get('state_dict', c)}, "
        "'weights_only.pth')\"")
    ways_out = ('Ways out: get the weights from a source you trust; or, only '
                'if you trust this file, save its tensors once as a plain '
                f'checkpoint ({resave}) and load that file instead')
    refused = _refusal(str(err))
    if refused is not None:
        return UnsafeCheckpointError(
            f'Refused to load the checkpoint {source}: it holds {refused}. '
            'Of numpy and mmengine objects, the package loads plain numeric '
            'and bool arrays, scalars and dtypes and HistoryBuffer values '
            'only: others can run code, crash the process or read memory '
            'it does not own, so nothing from the file was used. ' +
            ways_out + '.')
    name = _unsafe_object_name(str(err))
    what = (f'the Python object `{name}`' if name else
            'a Python object (' + str(err).strip().splitlines()[-1] + ')')
    return UnsafeCheckpointError(
        f'Refused to load the checkpoint {source}: it contains {what}, which '
        'is not on the allow-list of torch.load(weights_only=True) '
        '(fcaformer_mm.compat.safe_global_names()). Unpickling it could run '
        'code on this machine, so nothing from the file was used. ' +
        ways_out + (
            f'; or, if `{name}` is a plain data class you trust, allow it '
            'with `torch.serialization.add_safe_globals([...])` before '
            'loading.' if name and name.rsplit('.', 1)[-1][:1].isupper()
            else '.'))


def _describe_non_checkpoint(head: bytes) -> str | None:
    """What the first bytes of a file say it is, when it is clearly not a
    checkpoint; None when it may be one."""
    if head.startswith(_ZIP_MAGIC) or head[:1] == bytes([_PICKLE_PROTO]):
        return None  # torch.save's zip format or a legacy pickle
    if len(head) >= 262 and head[257:262] == b'ustar':
        return None  # torch's oldest (tar) format
    if head[8:10] == b'{"':
        return ('a safetensors file (JSON header): load it with '
                'safetensors.torch.load_file and save the state dict with '
                'torch.save, or give the .pth file of the model')
    try:
        text = head.decode('utf-8')
    except UnicodeDecodeError:
        text = None
    if text is not None and text.strip() and all(
            ch.isprintable() or ch in '\r\n\t' for ch in text[:200]):
        first = text.strip().splitlines()[0][:80]
        lowered = text.lstrip().lower()
        if lowered.startswith('version https://git-lfs'):
            kind = ('a Git LFS pointer, not the file itself: run '
                    '`git lfs pull` in its repository')
        elif lowered.startswith(('<!doctype html', '<html', '<?xml')):
            kind = ('an HTML/XML page (an error or log-in page where the '
                    'file was expected): check the URL and download the '
                    'file itself')
        else:
            kind = ('a text file: give the path of the .pth checkpoint '
                    '(a config, log or last_checkpoint file is not one)')
        return f'{kind}; it begins with {first!r}'
    return ('neither the zip format of torch.save nor a pickle (another '
            'format such as ONNX or TorchScript-free archives, or a damaged '
            'file): give a checkpoint written by torch.save')


def _check_head(head: bytes, size: int, source: str,
                redownload: str = '') -> None:
    if size == 0:
        raise InvalidCheckpointError(
            f'The checkpoint {source} is empty (0 bytes): an interrupted '
            'download or save leaves such files. ' +
            (redownload or 'Save or download it again.'))
    problem = _describe_non_checkpoint(head)
    if problem is not None:
        raise InvalidCheckpointError(
            f'The checkpoint {source} is not a PyTorch checkpoint: it is '
            f'{problem}.' +
            (f' {redownload}' if redownload else ''))


def check_checkpoint_file(path: str,
                          source: str | None = None,
                          redownload: str = '') -> str:
    """Check that a local path is a file that may hold a checkpoint.

    Cheap (reads the first bytes); tools call it before building a model.

    Args:
        path (str): The file. ``~`` is expanded.
        source (str, optional): How to name it in errors. Defaults to
            ``path``.
        redownload (str): What to do about a bad downloaded copy, added to
            the errors. Defaults to ''.

    Returns:
        str: The expanded path.

    Raises:
        CheckpointNotFoundError: No such file (the message lists the
            checkpoints next to it) or an empty path.
        InvalidCheckpointError: A directory, an empty file, a text file or
            another format.
    """
    source = source or path
    if not path:
        raise CheckpointNotFoundError(
            'An empty checkpoint path was given: give the path or URL of a '
            'checkpoint.')
    path = osp.expanduser(str(path))
    if osp.isdir(path):
        found = sorted(f for f in os.listdir(path) if f.endswith('.pth'))
        hint = (f' It holds {", ".join(found[:8])}'
                f'{" ..." if len(found) > 8 else ""}: give one of them.'
                if found else ' It holds no .pth file.')
        raise InvalidCheckpointError(
            f'The checkpoint {source} is a directory, not a file.{hint}')
    if not osp.isfile(path):
        parent = osp.dirname(path) or '.'
        near = sorted(f for f in os.listdir(parent)
                      if f.endswith('.pth')) if osp.isdir(parent) else []
        hint = (f' Checkpoints in {parent}: {", ".join(near[:8])}.'
                if near else '')
        raise CheckpointNotFoundError(
            f'The checkpoint {source} does not exist.{hint}')
    with open(path, 'rb') as f:
        head = f.read(_HEAD_BYTES)
    _check_head(head, osp.getsize(path), source, redownload)
    return path


def _log(message: str) -> None:
    try:
        from mmengine.logging import print_log
    except ImportError:  # pragma: no cover - mmengine is a dependency
        warnings.warn(message)
        return
    print_log(message, logger='current', level=logging.WARNING)


#: Checkpoint strings that mmengine runs as Python code, and where:
#: ``Runner.resume`` passes ``meta['config']`` to
#: ``Config.fromstring(..., '.py')`` (only to read ``gpu_ids`` from it).
_CODE_STRINGS = (('meta', 'config'), )


def _drop_code_strings(checkpoint: Any, source: str) -> None:
    """Remove the strings of :data:`_CODE_STRINGS` from a loaded checkpoint,
    and say so.

    mmengine 2.x writes the config as ``meta['cfg']`` and never reads
    ``meta['config']`` but in ``Runner.resume``, which executes it; the
    checkpoints that hold one are of mmcv 1.x days. Dropped, they resume
    and load as before: only the check that the number of GPUs matches
    (``gpu_ids`` of that config) is skipped.
    """
    for outer, inner in _CODE_STRINGS:
        part = checkpoint.get(outer) if isinstance(checkpoint, dict) else None
        if isinstance(part, dict) and inner in part:
            value = part.pop(inner)
            size = (f'{len(value)} characters'
                    if isinstance(value, str) else type(value).__name__)
            _log(f"fcaformer_mm dropped {outer}['{inner}'] ({size}) of the "
                 f'checkpoint {source} unread: mmengine\'s Runner.resume '
                 'would run it as Python code. The weights and the training '
                 'state load as before; only its check of the number of GPUs '
                 f'(gpu_ids of that config) is skipped.')


def _torch_load(file: str | IO[bytes], map_location: Any, source: str,
                path: str | None, redownload: str = '') -> Any:
    """``torch.load(weights_only=True)`` under :func:`checkpoint_globals`,
    the stand-ins swapped for real objects, with errors that name the
    file."""
    again = redownload or 'Save or download it again.'
    made = _STAND_INS_MADE[0]
    try:
        with checkpoint_globals():
            checkpoint = torch.load(
                file, map_location=map_location, weights_only=True)
        if _STAND_INS_MADE[0] != made:
            checkpoint = _materialize(checkpoint, {})
    except CheckpointError:
        raise
    except pickle.UnpicklingError as err:
        if _REFUSED in str(err) or _unsafe_object_name(str(err)):
            raise _unsafe_error(source, path, err) from None
        raise InvalidCheckpointError(
            f'The checkpoint {source} could not be read '
            f'({_unpickler_problem(str(err))}). The file may be damaged or '
            f'in another format. {again}') from None
    except (EOFError, zipfile.BadZipFile, tarfile.TarError, KeyError) as err:
        raise InvalidCheckpointError(
            f'The checkpoint {source} is cut short or damaged and could not '
            f'be read ({type(err).__name__}: {err}). {again}') from None
    except RuntimeError as err:
        text = str(err)
        if 'deserialize object on' in text:
            raise  # a device this machine lacks: map_location is the fix
        raise InvalidCheckpointError(
            f'The checkpoint {source} is cut short or damaged and could '
            f'not be read ({text.split(". ")[0][:300]}). {again}') from None
    except Exception as err:  # noqa: BLE001  (whatever a damaged file does)
        raise InvalidCheckpointError(
            f'The checkpoint {source} is damaged and could not be read '
            f'({type(err).__name__}: {str(err)[:300]}). {again}') from None
    _drop_code_strings(checkpoint, source)
    return checkpoint


def load_checkpoint_file(path: str,
                         map_location: Any = None,
                         source: str | None = None,
                         redownload: str = '') -> Any:
    """Read a local checkpoint with ``torch.load(weights_only=True)``.

    Args:
        path (str): The file.
        map_location: As for :func:`torch.load`.
        source (str, optional): How to name the checkpoint in errors, e.g.
            the URL it was downloaded from. Defaults to ``path``.
        redownload (str): What to do about a bad downloaded copy, added to
            the errors. Defaults to ''.

    Returns:
        The unpickled checkpoint.

    Raises:
        UnsafeCheckpointError: The file pickles an object outside the
            allow-list (the message names it).
        InvalidCheckpointError: Not a checkpoint (see
            :func:`check_checkpoint_file`) or damaged.
        CheckpointNotFoundError: No such file.
    """
    source = source or path
    path = check_checkpoint_file(path, source, redownload)
    return _torch_load(path, map_location, source, path, redownload)


def _load_checkpoint_bytes(data: bytes, map_location: Any,
                           source: str) -> Any:
    _check_head(data[:_HEAD_BYTES], len(data), source)
    with io.BytesIO(data) as buffer:
        return _torch_load(buffer, map_location, source, None)


def load_from_local(filename: str, map_location: Any = None) -> Any:
    """Loader of local paths (mmengine's fallback for paths of no scheme)."""
    found = re.match(r'^([A-Za-z][A-Za-z0-9+.-]*)://', str(filename))
    if found and not osp.exists(filename):
        from mmengine.runner.checkpoint import CheckpointLoader
        known = sorted({
            p.replace(r'(\S+\:)?', '')
            for p in CheckpointLoader._schemes if p
        })
        raise CheckpointNotFoundError(
            f'No checkpoint loader knows the scheme {found.group(1)}:// of '
            f'{filename}. Known schemes: {", ".join(known)}. Give a local '
            'path, an http(s):// URL, or a name of one of those schemes '
            '(e.g. mmcls://NAME for the names of mmengine/hub/mmcls.json).')
    return load_checkpoint_file(filename, map_location)


def _dist_info() -> tuple[int, int]:
    try:
        from mmengine.dist import get_dist_info
    except ImportError:  # pragma: no cover - mmengine is a dependency
        return 0, 1
    return get_dist_info()


def download_cache_path(url: str, model_dir: str | None = None) -> str:
    """Where :func:`load_from_http` keeps the download of ``url``.

    The name is the URL's file name with a short sha256 of the whole URL
    before its extension (``model.pth`` of ``https://a/model.pth`` becomes
    ``model.<16 hex digits>.pth``), so two URLs that end in the same file
    name (``a/model.pth``, ``b/model.pth``, ``model.pth?v=2``) each get
    their own file.

    Args:
        url (str): The checkpoint's URL.
        model_dir (str, optional): The cache folder. Defaults to torch.hub's
            (``$TORCH_HOME/hub/checkpoints``).

    Returns:
        str: The path of the cached file (which may not exist yet).
    """
    from torch.hub import get_dir
    model_dir = model_dir or osp.join(get_dir(), 'checkpoints')
    name = osp.basename(urllib.parse.urlparse(url).path)
    name = re.sub(r'[^A-Za-z0-9._-]', '_', name).lstrip('.') or 'checkpoint'
    stem, ext = osp.splitext(name)
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return osp.join(model_dir, f'{stem[:100]}.{digest}{ext[:16]}')


def _download(url: str, model_dir: str | None = None) -> str:
    """Download ``url`` into the cache (:func:`download_cache_path`)
    unless it is there."""
    from torch.hub import download_url_to_file
    cached = download_cache_path(url, model_dir)
    os.makedirs(osp.dirname(cached), exist_ok=True)
    if not osp.exists(cached):
        try:
            download_url_to_file(url, cached, progress=False)
        except (urllib.error.URLError, OSError, ValueError) as err:
            raise CheckpointNotFoundError(
                f'Could not download the checkpoint {url}: {err}. Check the '
                'URL and the network, or download the file yourself and '
                'give its local path.') from None
    return cached


def load_from_http(filename: str,
                   map_location: Any = None,
                   model_dir: str | None = None) -> Any:
    """Loader of ``http://`` and ``https://`` URLs.

    The file is downloaded once into torch.hub's cache folder
    (``$TORCH_HOME/hub/checkpoints``) under a name of its whole URL
    (:func:`download_cache_path`), then read with
    ``torch.load(weights_only=True)``. Distributed: rank 0 downloads, the
    other ranks wait and read the cached copy.
    """
    rank, world_size = _dist_info()
    cached = None
    if rank == 0:
        cached = _download(filename, model_dir)
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:
            cached = _download(filename, model_dir)
    return load_checkpoint_file(
        cached,
        map_location,
        source=f'{filename} (downloaded to {cached})',
        redownload=f'Delete {cached} to download it again, and check that '
        'the URL leads to the checkpoint file itself.')


def load_from_openmmlab(filename: str, map_location: Any = None) -> Any:
    """Loader of ``open-mmlab://NAME`` and ``openmmlab://NAME``: the names
    of mmengine's ``hub/openmmlab.json`` and of
    ``$MMENGINE_HOME/open_mmlab.json``."""
    from mmengine.runner import checkpoint as mm_ckpt
    prefix = ('open-mmlab://'
              if filename.startswith('open-mmlab://') else 'openmmlab://')
    name = filename[len(prefix):]
    deprecated = mm_ckpt.get_deprecated_model_names()
    if name in deprecated:
        warnings.warn(
            f'{prefix}{name} is deprecated in favor of '
            f'{prefix}{deprecated[name]}', DeprecationWarning)
        name = deprecated[name]
    urls = mm_ckpt.get_external_models()
    if name not in urls:
        raise CheckpointNotFoundError(
            f'{filename}: {name!r} is not an open-mmlab model name (the '
            "names are those of mmengine's hub/openmmlab.json and of "
            'open_mmlab.json in $MMENGINE_HOME). Give a URL or a local path '
            'instead.')
    url = urls[name]
    if url.startswith(('http://', 'https://')):
        return load_from_http(url, map_location)
    return load_checkpoint_file(
        osp.join(mm_ckpt._get_mmengine_home(), url),
        map_location,
        source=f'{filename} ({url} in $MMENGINE_HOME)')


def load_from_torchvision(filename: str, map_location: Any = None) -> Any:
    """Loader of ``torchvision://NAME`` (and the deprecated
    ``modelzoo://NAME``): torchvision's weight URLs."""
    from mmengine.runner.checkpoint import get_torchvision_models
    if filename.startswith('modelzoo://'):
        warnings.warn(
            'The URL scheme of "modelzoo://" is deprecated, please use '
            '"torchvision://" instead', DeprecationWarning)
        name = filename[len('modelzoo://'):]
    else:
        name = filename[len('torchvision://'):]
    urls = get_torchvision_models()
    if name not in urls:
        raise CheckpointNotFoundError(
            f'{filename}: {name!r} is not a torchvision weight name (e.g. '
            "'resnet50', 'resnet50.imagenet1k_v2'). Give a URL or a local "
            'path instead.')
    return load_from_http(urls[name], map_location)


def load_from_mmcls(filename: str, map_location: Any = None) -> Any:
    """Loader of ``mmcls://NAME``: the names of mmengine's
    ``hub/mmcls.json``; like mmengine's, it keeps the backbone weights only,
    without their ``backbone.`` prefix."""
    from mmengine.runner.checkpoint import get_mmcls_models
    name = filename[len('mmcls://'):]
    urls = get_mmcls_models()
    if name not in urls:
        raise CheckpointNotFoundError(
            f'{filename}: {name!r} is not an mmcls model name (the names are '
            "those of mmengine's hub/mmcls.json). Give a URL or a local path "
            'instead.')
    checkpoint = load_from_http(urls[name], map_location)
    state_dict = checkpoint.get('state_dict', checkpoint)
    return dict(state_dict={
        key[len('backbone.'):]: value
        for key, value in state_dict.items() if key.startswith('backbone.')
    })


def load_from_pavi(filename: str, map_location: Any = None) -> Any:
    """Loader of ``pavi://`` (needs the ``pavi`` package)."""
    try:
        from pavi import modelcloud
    except ImportError:
        raise ImportError(
            f'{filename}: install pavi to load checkpoints from its model '
            'cloud.') from None
    model = modelcloud.get(filename[len('pavi://'):])
    with tempfile.TemporaryDirectory() as tmp_dir:
        downloaded = osp.join(tmp_dir, model.name)
        model.download(downloaded)
        return load_checkpoint_file(
            downloaded, map_location, source=filename)


def load_from_ceph(filename: str,
                   map_location: Any = None,
                   backend: str = 'petrel') -> Any:
    """Loader of the ``s3://`` and ``petrel://`` file backends."""
    from mmengine.fileio import get_file_backend
    file_backend = get_file_backend(
        filename, backend_args={'backend': backend})
    return _load_checkpoint_bytes(
        file_backend.get(filename), map_location, filename)


#: The schemes of mmengine's ``CheckpointLoader`` (its regular expressions,
#: as mmengine registers them) and the loaders that replace its own.
SCHEMES: dict[str, Callable] = {
    '': load_from_local,
    'http://': load_from_http,
    'https://': load_from_http,
    'open-mmlab://': load_from_openmmlab,
    'openmmlab://': load_from_openmmlab,
    'torchvision://': load_from_torchvision,
    'modelzoo://': load_from_torchvision,
    'mmcls://': load_from_mmcls,
    'pavi://': load_from_pavi,
    r'(\S+\:)?s3://': load_from_ceph,
    r'(\S+\:)?petrel://': load_from_ceph,
}


def _register_loaders() -> list[str]:
    """Put :data:`SCHEMES` in place of mmengine's loaders."""
    try:
        from mmengine.runner.checkpoint import CheckpointLoader
    except ImportError:  # mmengine absent: nothing loads through it.
        return []
    for prefix, loader in SCHEMES.items():
        CheckpointLoader.register_scheme(prefix, loader, force=True)
    return list(SCHEMES)


def is_applied() -> bool:
    """Whether :func:`apply` has put the package's loaders in place of
    mmengine's in this process."""
    return _APPLIED


def apply() -> dict[str, Any]:
    """Make every checkpoint loader of mmengine read with
    ``torch.load(weights_only=True)`` and the package's allow-list.

    The allow-list (:func:`safe_global_names`) is in force only inside the
    package's loads (:func:`checkpoint_globals`); torch's own allow-list is
    left as it is, so a plain ``torch.load`` elsewhere in the process
    behaves as without the package. Idempotent: calling it again does
    nothing more.

    Returns:
        dict: ``{'applied': bool, 'reason': str, 'globals': list[str],
        'loaders': list[str]}`` describing what was done (``globals``: the
        names allowed inside the package's loads; ``loaders``: the schemes
        of mmengine's ``CheckpointLoader`` now served by this module).
    """
    global _APPLIED, _LOADERS
    if _LOADERS is None:
        _LOADERS = _register_loaders()
    if not hasattr(torch.serialization, 'add_safe_globals'):
        return dict(
            applied=False,
            reason=f'torch {torch.__version__} has no add_safe_globals: '
            "mmengine's training state cannot be allow-listed",
            globals=[],
            loaders=list(_LOADERS))
    _APPLIED = True
    return dict(
        applied=True,
        reason="mmengine's checkpoint loaders read with "
        'torch.load(weights_only=True), these globals allowed inside their '
        'loads only',
        globals=safe_global_names(),
        loaders=list(_LOADERS))
