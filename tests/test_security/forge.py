"""Forged checkpoints: pickles that a checkpoint loader must refuse, or load
without crashing, running code or changing the process.

Each ``forge_*`` function writes one file with ``torch.save`` (objects whose
``__reduce__`` emits exactly the pickle to forge) or by rewriting the
``data.pkl`` of a real checkpoint, and returns its path. :data:`CASES` names
them with the outcome that :mod:`load_each` must report.
"""
from __future__ import annotations

import io
import os
import pickle
import random
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

_MULTIARRAY = (getattr(np, '_core', None) or np.core).multiarray
_RECONSTRUCT = _MULTIARRAY._reconstruct
_SCALAR = _MULTIARRAY.scalar


class Reduce:
    """Pickles as ``func(*args)``, followed by ``BUILD state`` if given."""

    def __init__(self, func: Callable, args: tuple, state: Any = None):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        if self.state is None:
            return (self.func, self.args)
        return (self.func, self.args, self.state)


def dtype(spec: str, state: tuple) -> Reduce:
    """``numpy.dtype(spec, False, True)`` with the ``__setstate__`` tuple
    ``state`` (version, order, subarray, names, fields, elsize, alignment,
    flags)."""
    return Reduce(np.dtype, (spec, False, True), state)


def ndarray(shape: tuple, descr: Any, data: Any,
            fortran: bool = False) -> Reduce:
    """An ndarray as numpy pickles it, with any dtype and data."""
    return Reduce(_RECONSTRUCT, (np.ndarray, (0, ), b'b'),
                  (1, shape, descr, fortran, data))


class Statistics:
    """Pickles as ``getattr(HistoryBuffer, name)``."""

    def __init__(self, name: str):
        self.name = name

    def __reduce__(self):
        return (getattr, (HistoryBuffer, self.name))


def history_state(state: dict) -> Reduce:
    """A HistoryBuffer whose ``__setstate__`` gets ``state`` (built by a
    call; mmengine's own pickles use ``NEWOBJ``, as the real checkpoint
    of the tests does)."""
    return Reduce(HistoryBuffer, (), state)


class Shell:
    """Runs ``touch marker`` when unpickled without weights_only."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


def config_payload(marker: Path) -> str:
    """A config that creates ``marker`` when mmengine executes it."""
    return (f'written = open({str(marker)!r}, "w").write("ran")\n'
            "model = dict(type='x')\n")


def save(obj: Any, path: Path) -> Path:
    torch.save(obj, path)
    return path


def rezip(src: Path, dst: Path, pickle_bytes: bytes | None = None,
          raw: Callable[[bytes], bytes] | None = None) -> Path:
    """``src`` (torch's zip format) with its ``data.pkl`` replaced by
    ``pickle_bytes``, then its bytes passed through ``raw``."""
    out = io.BytesIO()
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(
            out, 'w', zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if pickle_bytes is not None and info.filename.endswith(
                    '/data.pkl'):
                data = pickle_bytes
            zout.writestr(info.filename, data)
    data = out.getvalue()
    dst.write_bytes(raw(data) if raw else data)
    return dst


def data_pkl(path: Path) -> bytes:
    with zipfile.ZipFile(path) as z:
        name = next(n for n in z.namelist() if n.endswith('/data.pkl'))
        return z.read(name)


def _patch_sizes(data: bytes, size: int) -> bytes:
    """Claim ``size`` bytes for data.pkl in the zip's local and central
    headers."""
    out = bytearray(data)
    for sig, offset in ((b'PK\x03\x04', 18), (b'PK\x01\x02', 20)):
        start = 0
        while (pos := out.find(sig, start)) >= 0:
            start = pos + 4
            name_len_at = pos + (26 if sig == b'PK\x03\x04' else 28)
            name_len = struct.unpack_from('<H', out, name_len_at)[0]
            name_at = pos + (30 if sig == b'PK\x03\x04' else 46)
            if out[name_at:name_at + name_len].endswith(b'data.pkl'):
                struct.pack_into('<II', out, pos + offset, size, size)
    return bytes(out)


def _patch_entry_count(data: bytes) -> bytes:
    out = bytearray(data)
    pos = out.rfind(b'PK\x05\x06')
    struct.pack_into('<HH', out, pos + 8, 0xFFFF, 0xFFFF)
    return bytes(out)


# --------------------------------------------------------------------------
# The named cases: name -> (writer(dir, marker, real) -> path, outcome).
# outcome: the class name load_each reports ('data' for a load).
# --------------------------------------------------------------------------
F8 = (3, '<', None, None, None, -1, -1, 0)
HOLE = (3, '|', None, ('f0', ), {'f0': (np.dtype('O'), 0)}, 8, 1, 0)


def _cases() -> dict[str, tuple[Callable[[Path, Path, Path], Path], str]]:
    unsafe, invalid = 'UnsafeCheckpointError', 'InvalidCheckpointError'

    def meta(value: Any) -> Callable[[Path, Path, Path], Path]:
        def write(d: Path, marker: Path, real: Path) -> Path:
            return save({'state_dict': {'w': torch.ones(2)},
                         'meta': {'x': value(marker)}}, d / 'case.pth')
        return write

    def cut(fraction: float) -> Callable[[Path, Path, Path], Path]:
        def write(d: Path, marker: Path, real: Path) -> Path:
            data = real.read_bytes()
            path = d / 'case.pth'
            path.write_bytes(data[:int(len(data) * fraction)])
            return path
        return write

    def raw_pickle(data: bytes) -> Callable[[Path, Path, Path], Path]:
        def write(d: Path, marker: Path, real: Path) -> Path:
            path = d / 'case.pth'
            path.write_bytes(data)
            return path
        return write

    def zipped(pickle_bytes: bytes | None = None,
               raw: Callable[[bytes], bytes] | None = None):
        def write(d: Path, marker: Path, real: Path) -> Path:
            return rezip(real, d / 'case.pth', pickle_bytes, raw)
        return write

    object_o = np.dtype('O')
    return {
        # numpy: what crashed or read wild memory under the old allow-list
        'object_array_short_list': (
            meta(lambda m: ndarray((1, ), object_o, [])), unsafe),
        'object_array_of_payload': (
            meta(lambda m: ndarray((1, ), object_o, [Shell(m)])), unsafe),
        'void_dtype_hidden_object_field': (
            meta(lambda m: ndarray((1, ), dtype('V8', HOLE),
                                   b'AAAAAAAA')), unsafe),
        'float_dtype_forged_object_flags': (
            meta(lambda m: ndarray((1, ), dtype(
                'f8', (3, '<', None, None, None, -1, -1, 63)),
                b'AAAAAAAA')), unsafe),
        'float_dtype_forged_elsize': (
            meta(lambda m: ndarray((1, ), dtype(
                'f8', (3, '<', None, None, None, 64, 8, 0)), b'A' * 8)),
            unsafe),
        'structured_dtype': (
            meta(lambda m: np.zeros(2, dtype='i4,f8')), unsafe),
        'string_dtype': (meta(lambda m: np.array(['ab', 'c'])), unsafe),
        'datetime_dtype': (
            meta(lambda m: np.array([1], dtype='M8[s]')), unsafe),
        'object_scalar': (
            meta(lambda m: Reduce(_SCALAR, (object_o, Shell(m)))), unsafe),
        'array_data_too_short': (
            meta(lambda m: ndarray((10, ), np.dtype('f8'), b'\0' * 8)),
            unsafe),
        'array_shape_huge': (
            meta(lambda m: ndarray((1 << 40, ), np.dtype('f8'), b'\0' * 8)),
            unsafe),
        'array_never_filled': (
            meta(lambda m: Reduce(_RECONSTRUCT,
                                  (np.ndarray, (0, ), b'b'))), unsafe),
        'reconstruct_other_class': (
            meta(lambda m: Reduce(_RECONSTRUCT,
                                  (HistoryBuffer, (0, ), b'b'))), unsafe),
        'bytes_huge': (meta(lambda m: Reduce(bytes, (1 << 40, ))), unsafe),
        # mmengine's HistoryBuffer and its getattr
        'history_buffer_getattr_init': (
            meta(lambda m: history_state({
                '_log_history': np.ones(1), '_count_history': np.ones(1),
                'max_length': 10,
                'statistics_methods': {'evil': Statistics('__init__')}})),
            unsafe),
        'history_buffer_rebinds_mean': (
            meta(lambda m: history_state({
                '_log_history': np.ones(2), '_count_history': np.ones(2),
                'max_length': 10,
                'statistics_methods': {'mean': Statistics('max'),
                                       'min': Statistics('current')}})),
            'data'),
        'history_buffer_bad_lengths': (
            meta(lambda m: history_state({
                '_log_history': np.ones(2), '_count_history': np.ones(3),
                'max_length': 10})), unsafe),
        'history_buffer_extra_key': (
            meta(lambda m: history_state({
                '_log_history': np.ones(1), '_count_history': np.ones(1),
                'max_length': 10, '__class__': 'x'})), unsafe),
        # code at unpickling time
        'os_system': (meta(lambda m: Shell(m)), unsafe),
        'eval': (meta(lambda m: Reduce(eval, (
            f'open({str(m)!r}, "w")', ))), unsafe),
        # cut short
        'truncated_10': (cut(0.10), invalid),
        'truncated_50': (cut(0.50), invalid),
        'truncated_99': (cut(0.99), invalid),
        # oversized headers and lengths
        'legacy_pickle_binunicode_4g': (
            raw_pickle(b'\x80\x02X\xf0\xff\xff\xffabc'), invalid),
        'legacy_pickle_binbytes8_huge': (
            raw_pickle(b'\x80\x04\x8e' + struct.pack('<Q', 1 << 62) + b'x'),
            'error'),
        'legacy_pickle_long4_huge': (
            raw_pickle(b'\x80\x02\x8b' + struct.pack('<i', 0x7FFFFFF0) +
                       b'x'), 'error'),
        'zip_data_pkl_claims_4g': (
            zipped(raw=lambda b: _patch_sizes(b, 0xFFFFFFF0)), invalid),
        'zip_entry_count_huge': (zipped(raw=_patch_entry_count), invalid),
        'zip_pickle_binunicode_4g': (
            zipped(b'\x80\x02X\xf0\xff\xff\xffabc'), 'error'),
        'zip_storage_numel_huge': (
            zipped(pickle_bytes=_huge_storage_pickle()), 'error'),
    }


def _huge_storage_pickle() -> bytes:
    """The ``data.pkl`` of one tensor whose storage claims 2**60 float
    elements (the record ``data/0`` of the real checkpoint is small)."""
    storage = object()

    class Pickler(pickle.Pickler):

        def persistent_id(self, obj):
            if obj is storage:
                return ('storage', torch.FloatStorage, '0', 'cpu', 1 << 60)
            return None

    out = io.BytesIO()
    Pickler(out, protocol=2).dump({'w': Reduce(
        torch._utils._rebuild_tensor_v2,
        (storage, 0, (1 << 60, ), (1, ), False, OrderedDict()))})
    return out.getvalue()


CASES = _cases()


def mutations(real: Path, folder: Path, count: int,
              seed: int = 0) -> list[Path]:
    """``count`` copies of ``real`` whose ``data.pkl`` is mutated (bytes
    flipped, inserted, deleted or duplicated; seeded), each rezipped."""
    rng = random.Random(seed)
    source = data_pkl(real)
    paths = []
    for i in range(count):
        data = bytearray(source)
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(len(data))
            kind = rng.choice(('flip', 'byte', 'insert', 'delete', 'dup'))
            if kind == 'flip':
                data[pos] ^= 1 << rng.randrange(8)
            elif kind == 'byte':
                data[pos] = rng.randrange(256)
            elif kind == 'insert':
                data.insert(pos, rng.randrange(256))
            elif kind == 'delete':
                del data[pos]
            else:
                end = min(len(data), pos + rng.randint(1, 16))
                data[pos:pos] = data[pos:end]
        paths.append(rezip(real, folder / f'mutant_{i:03d}.pth', bytes(data)))
    return paths
