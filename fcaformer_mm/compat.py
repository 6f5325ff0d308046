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

The layer is applied once, on ``import fcaformer_mm``. Without
``add_safe_globals`` (torch < 2.4) the allow-list cannot be registered, so
those torch builds cannot resume mmengine's training state; the loaders are
registered all the same.
"""
from __future__ import annotations

import argparse
import hashlib
import inspect
import io
import os
import os.path as osp
import pickle
import re
import tarfile
import tempfile
import urllib.error
import urllib.parse
import warnings
import zipfile
from typing import IO, Any, Callable

import numpy as np
import torch

__all__ = [
    'apply', 'safe_global_names', 'is_applied', 'CheckpointError',
    'UnsafeCheckpointError', 'InvalidCheckpointError',
    'CheckpointNotFoundError', 'check_checkpoint_file', 'load_checkpoint_file',
    'load_from_local', 'load_from_http', 'load_from_openmmlab',
    'load_from_torchvision', 'load_from_mmcls', 'load_from_pavi',
    'load_from_ceph', 'SCHEMES'
]

_APPLIED = False
_LOADERS: list[str] | None = None
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


def _unsafe_error(source: str, path: str | None,
                  err: BaseException) -> UnsafeCheckpointError:
    name = _unsafe_object_name(str(err))
    what = (f'the Python object `{name}`' if name else
            'a Python object (' + str(err).strip().splitlines()[-1] + ')')
    where = path or 'CHECKPOINT'
    resave = (
        "python -c \"import torch; c = torch.load('" + where +
        "', map_location='cpu', weights_only=False); "
        "torch.save({'state_dict': c.get('state_dict', c)}, "
        "'weights_only.pth')\"")
    return UnsafeCheckpointError(
        f'Refused to load the checkpoint {source}: it contains {what}, which '
        'is not on the allow-list of torch.load(weights_only=True) '
        '(fcaformer_mm.compat.safe_global_names()). Unpickling it could run '
        'code on this machine, so nothing from the file was used. Ways out: '
        'get the weights from a source you trust; or, only if you trust '
        'this file, save its tensors once as a plain checkpoint '
        f'({resave}) and load that file instead' + (
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


def _torch_load(file: str | IO[bytes], map_location: Any, source: str,
                path: str | None, redownload: str = '') -> Any:
    """``torch.load(weights_only=True)`` with errors that name the file."""
    try:
        return torch.load(file, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if 'Weights only load failed' in str(err) or _unsafe_object_name(
                str(err)):
            raise _unsafe_error(source, path, err) from None
        raise InvalidCheckpointError(
            f'The checkpoint {source} could not be read ({err}). '
            'The file may be damaged or in another format. ' +
            (redownload or 'Save or download it again.')) from None
    except (EOFError, zipfile.BadZipFile, tarfile.TarError, KeyError) as err:
        raise InvalidCheckpointError(
            f'The checkpoint {source} is cut short or damaged and could not '
            f'be read ({type(err).__name__}: {err}). ' +
            (redownload or 'Save or download it again.')) from None
    except RuntimeError as err:
        text = str(err)
        if 'PytorchStreamReader' in text or 'zip archive' in text:
            raise InvalidCheckpointError(
                f'The checkpoint {source} is cut short or damaged and could '
                f'not be read ({text.split(". ")[0]}). ' +
                (redownload or 'Save or download it again.')) from None
        raise


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


def _download(url: str, model_dir: str | None = None) -> str:
    """Download ``url`` into torch.hub's checkpoint cache (as
    ``torch.hub.load_state_dict_from_url`` names it) unless it is there."""
    from torch.hub import download_url_to_file, get_dir
    model_dir = model_dir or osp.join(get_dir(), 'checkpoints')
    os.makedirs(model_dir, exist_ok=True)
    name = osp.basename(urllib.parse.urlparse(url).path)
    if not name:
        name = hashlib.sha256(url.encode()).hexdigest()[:16] + '.pth'
    cached = osp.join(model_dir, name)
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

    The file is downloaded once into torch.hub's cache
    (``$TORCH_HOME/hub/checkpoints``, the place
    ``torch.hub.load_state_dict_from_url`` uses), then read with
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
    """Whether :func:`apply` has registered the allow-list in this process."""
    return _APPLIED


def apply() -> dict[str, Any]:
    """Make mmengine checkpoints loadable under ``weights_only=True``, and
    every checkpoint loader of mmengine read under it.

    Idempotent: calling it again does nothing more.

    Returns:
        dict: ``{'applied': bool, 'reason': str, 'globals': list[str],
        'loaders': list[str]}`` describing what was done (``loaders``: the
        schemes of mmengine's ``CheckpointLoader`` now served by this
        module).
    """
    global _APPLIED, _LOADERS
    if _LOADERS is None:
        _LOADERS = _register_loaders()
    add_safe_globals = getattr(torch.serialization, 'add_safe_globals', None)
    if add_safe_globals is None:
        return dict(
            applied=False,
            reason=f'torch {torch.__version__} has no add_safe_globals: '
            "mmengine's training state cannot be allow-listed",
            globals=[],
            loaders=list(_LOADERS))
    if not _APPLIED:
        add_safe_globals(_safe_globals())
        _APPLIED = True
    return dict(
        applied=True,
        reason='allow-listed for torch.load(weights_only=True); mmengine\'s '
        'checkpoint loaders read under it',
        globals=safe_global_names(),
        loaders=list(_LOADERS))
