"""The official FcaFormer code, loaded from a local checkout for comparisons.

The official repository (`hkzhang-git/FcaFormer
<https://github.com/hkzhang-git/FcaFormer>`_) is not a package and is never
installed: the tools that compare against it (``benchmark.py``,
``tools/misc/make_golden_fixtures.py``, ``tools/misc/compare_official.py``)
take the path of a checkout and execute one of its model files:

- :func:`load_official_dense`: ``FcaFormer_SH_512`` of
  ``semantic-segmentation/backbone/fcaformer.py``, the dense model;
- :func:`load_official_classifier`: the module of
  ``image_classification/models/fcaformer.py``, with ``FcaFormer`` and the
  ``fcaformer_l1`` ... ``fcaformer_l4`` builders.

Those files import mmcv 1.x, mmseg 0.x, ``mmcv_custom`` (a folder of the
official repository) and timm helpers. Stand-ins for them, reduced to what
the files use, are put in ``sys.modules`` only while a file is executed;
whatever was there before (the real mmseg 1.x, timm) is restored afterwards.
``einops`` is imported for real (``pip install einops``).

Example:
    >>> from fcaformer_mm.analysis.official import load_official_dense
    >>> FcaFormer_SH_512 = load_official_dense('/path/to/FcaFormer')
    >>> model = FcaFormer_SH_512().eval()   # the official dense L2
"""
from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

from torch import nn

__all__ = [
    'CLASSIFIER_FILE', 'DENSE_FILE', 'OFFICIAL_REPO',
    'load_official_classifier', 'load_official_dense', 'official_file'
]

OFFICIAL_REPO = 'hkzhang-git/FcaFormer'
#: The dense model's file, relative to the checkout.
DENSE_FILE = Path('semantic-segmentation', 'backbone', 'fcaformer.py')
#: The classifier's file, relative to the checkout.
CLASSIFIER_FILE = Path('image_classification', 'models', 'fcaformer.py')


def _stand_ins() -> dict[str, types.ModuleType]:
    """Modules the official files import, reduced to what they use."""
    from fcaformer_mm.models.utils.layers import DropPath

    def module(name: str, **attrs) -> types.ModuleType:
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        return mod

    class _Registry:
        """Accepts ``@BACKBONES.register_module()`` and registers nothing."""

        def register_module(self, *args, **kwargs):
            return lambda cls: cls

    def trunc_normal_(tensor, mean=0., std=1., a=-2., b=2.):
        return nn.init.trunc_normal_(tensor, mean, std, a, b)

    def to_2tuple(x):
        return tuple(x) if isinstance(x, (tuple, list)) else (x, x)

    def unavailable(*args, **kwargs):
        raise RuntimeError(
            'Not available in the official code loaded by '
            'fcaformer_mm.analysis.official: load weights with '
            'load_state_dict instead.')

    mods = {
        'timm': module('timm'),
        'timm.models': module('timm.models'),
        'timm.models.layers': module(
            'timm.models.layers',
            trunc_normal_=trunc_normal_,
            DropPath=DropPath,
            to_2tuple=to_2tuple),
        'timm.models.registry': module(
            'timm.models.registry', register_model=lambda fn: fn),
        'mmcv_custom': module('mmcv_custom', load_checkpoint=unavailable),
        'mmseg': module('mmseg'),
        'mmseg.utils': module('mmseg.utils', get_root_logger=unavailable),
        'mmseg.models': module('mmseg.models'),
        'mmseg.models.builder': module(
            'mmseg.models.builder', BACKBONES=_Registry()),
    }
    # Imported by the official files but never used by the models.
    try:
        import matplotlib.pyplot  # noqa: F401
    except ImportError:
        mods['matplotlib'] = module('matplotlib')
        mods['matplotlib.pyplot'] = module('matplotlib.pyplot')
    return mods


def official_file(path: str | Path, relative: str | Path) -> Path:
    """The file ``relative`` of the official checkout at ``path``.

    Args:
        path (str | Path): A checkout of the official repository, or the
            model file itself.
        relative (str | Path): The file's path inside the checkout
            (:data:`DENSE_FILE` or :data:`CLASSIFIER_FILE`).

    Returns:
        Path: The file.

    Raises:
        FileNotFoundError: ``path`` is neither a checkout holding
            ``relative`` nor a file; the message names the expected file.
    """
    root = Path(path)
    file = root / relative if root.is_dir() else root
    if not file.is_file():
        raise FileNotFoundError(
            f'{file} not found: expected a local checkout of {OFFICIAL_REPO} '
            f'(git clone https://github.com/{OFFICIAL_REPO}), which holds '
            f'{Path(relative).as_posix()}, or that file itself.')
    return file


def _execute(file: Path, module_name: str) -> types.ModuleType:
    """Execute ``file`` as a fresh module with the stand-ins in place."""
    stand_ins = _stand_ins()
    saved = {name: sys.modules.get(name) for name in stand_ins}
    sys.modules.update(stand_ins)
    try:
        spec = importlib.util.spec_from_file_location(module_name, file)
        mod = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(mod)
        except ModuleNotFoundError as exc:
            top = (exc.name or '').split('.')[0]
            if top in {name.split('.')[0] for name in stand_ins}:
                raise ImportError(
                    f'The official code in {file} imports {exc.name!r}, '
                    'which fcaformer_mm.analysis.official has no stand-in '
                    'for: is this a different version of the official code?'
                ) from exc
            raise ImportError(
                f'The official code in {file} imports {exc.name!r}, which is '
                f'not installed: pip install {top}') from exc
    finally:
        for name, value in saved.items():
            if value is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = value
    return mod


def load_official_dense(path: str | Path) -> type[nn.Module]:
    """``FcaFormer_SH_512``, the official dense model, from a checkout.

    Args:
        path (str | Path): A checkout of the official repository, or its
            ``semantic-segmentation/backbone/fcaformer.py``.

    Returns:
        type[nn.Module]: The class. Its defaults are the dense L2
        (``dims=[96, 192, 320, 480]``, ``depths=[2, 2, 7, 2]``,
        ``num_heads=[0, 0, 10, 15]``, ``seg_head_dims=[96, 192, 384,
        768]``); it returns the four ``norm{i}(head{i}(x))`` maps.

    Raises:
        FileNotFoundError: Not a checkout (see :func:`official_file`).
        ImportError: A package the file needs (einops) is missing.
    """
    file = official_file(path, DENSE_FILE)
    return _execute(file, '_official_fcaformer_dense').FcaFormer_SH_512


def load_official_classifier(path: str | Path) -> types.ModuleType:
    """The official classification module, from a checkout.

    Args:
        path (str | Path): A checkout of the official repository, or its
            ``image_classification/models/fcaformer.py``.

    Returns:
        types.ModuleType: The module: ``FcaFormer`` and the builders
        ``fcaformer_l1`` ... ``fcaformer_l4`` (224x224 inputs only; the
        output is ``head(norm_head(forward_features(x)))``).

    Raises:
        FileNotFoundError: Not a checkout (see :func:`official_file`).
        ImportError: A package the file needs (einops) is missing.
    """
    file = official_file(path, CLASSIFIER_FILE)
    return _execute(file, '_official_fcaformer_classifier')
