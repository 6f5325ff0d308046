"""The package's model index: names -> configs, metadata and inferencers.

Where the index lives:

- an installed distribution (``pip install .``, a wheel): under
  ``fcaformer_mm/.mim/`` (``model-index.yml``, ``configs/``, ``tools/``),
  the layout of the OpenMMLab codebases' own wheels, which OpenMIM reads;
- a clone (editable install, or the repository on ``PYTHONPATH``): the
  repository's top folder.

How each host API finds the models by name:

- mmpretrain: ``get_model``, ``list_models``, ``inference_model`` and its
  inferencers read ``mmpretrain.apis.ModelHub``, which takes other model
  indexes through its public ``ModelHub.register_model_index``;
  ``import fcaformer_mm`` registers the classification models there
  (:func:`register_mmpretrain_models`).
- mmseg's ``MMSegInferencer`` and mmdet's ``DetInferencer``: mmengine's
  ``BaseInferencer`` looks a name up only in the model index of the package
  of its scope, and accepts only the scopes of mmengine's own table
  (``mmengine.config.utils.MODULE2PACKAGE``), so a bare
  ``MMSegInferencer(model='upernet_fcaformer_l2_ade20k')`` searches mmseg's
  models and fails. Give the inferencer the config path instead
  (:func:`get_config_path`), or let :func:`get_inferencer` build the right
  inferencer from the name.
"""
from __future__ import annotations

import difflib
import fnmatch
from pathlib import Path
from typing import Any

__all__ = [
    'resource_root', 'load_model_index', 'list_models', 'get_model_info',
    'get_config_path', 'get_config', 'get_inferencer',
    'register_mmpretrain_models', 'register_model_hub', 'MODEL_INDEX',
    'MMPRETRAIN_TASKS'
]

#: The model index file, at the top of the resource root.
MODEL_INDEX = 'model-index.yml'
#: Tasks of the metafiles whose models mmpretrain's model hub takes.
MMPRETRAIN_TASKS = ('Image Classification', )

_PACKAGE_DIR = Path(__file__).resolve().parents[1]


def resource_root() -> Path:
    """The folder that holds ``model-index.yml``, ``configs/`` and ``tools/``.

    The clone the package is imported from (an editable install), else
    ``fcaformer_mm/.mim`` of an installed distribution.

    Raises:
        FileNotFoundError: If neither holds the model index (a package
            installed from its Python files alone).
    """
    candidates = (_PACKAGE_DIR.parent, _PACKAGE_DIR / '.mim')
    for root in candidates:
        if (root / MODEL_INDEX).is_file() and (root / 'configs').is_dir():
            return root
    raise FileNotFoundError(
        f'fcaformer_mm has no model index: neither {candidates[0]} nor '
        f'{candidates[1]} holds {MODEL_INDEX} and configs/. The package was '
        'installed without its configs; reinstall it from a complete clone '
        'or source distribution (`pip install .`), or run from the clone.')


def _read_yaml(path: Path) -> dict:
    import yaml

    if not path.is_file():
        raise FileNotFoundError(f'{path} is missing (listed by the model '
                                'index of fcaformer_mm).')
    with open(path, encoding='utf-8') as f:
        return yaml.safe_load(f) or {}


def load_model_index(root: str | Path | None = None) -> dict[str, dict]:
    """Read the model index and every metafile it imports.

    Args:
        root (str | Path, optional): Folder of ``model-index.yml``.
            Defaults to :func:`resource_root`.

    Returns:
        dict[str, dict]: The metafile entry of each model (``Name``,
        ``In Collection``, ``Metadata``, ``Results``, ``Weights``,
        ``Config``, ...) under its lower-cased name, in index order, each
        with ``Metafile``: the metafile's path relative to ``root``.

    Raises:
        ValueError: If two models share a name.
    """
    root = Path(root) if root is not None else resource_root()
    index = _read_yaml(root / MODEL_INDEX)
    models: dict[str, dict] = {}
    for metafile in index.get('Import') or []:
        for model in _read_yaml(root / metafile).get('Models') or []:
            key = model['Name'].lower()
            if key in models:
                raise ValueError(
                    f'Model name {model["Name"]!r} is used twice: in '
                    f'{models[key]["Metafile"]} and {metafile}.')
            models[key] = {**model, 'Metafile': metafile}
    return models


def _tasks(entry: dict) -> list[str]:
    results = entry.get('Results') or []
    if isinstance(results, dict):
        results = [results]
    return [r.get('Task') for r in results if r.get('Task')]


def list_models(pattern: str = '*', task: str | None = None) -> list[str]:
    """Names of the package's models.

    Args:
        pattern (str): Shell-style wildcard matched against the lower-cased
            names. Defaults to ``'*'``.
        task (str, optional): Keep only models with a result of this task
            (e.g. ``'Semantic Segmentation'``). Defaults to None.

    Returns:
        list[str]: Matching names, sorted.

    Example:
        >>> from fcaformer_mm.apis import list_models
        >>> list_models('*in1k')
        ['fcaformer_l1_in1k', 'fcaformer_l2_in1k', 'fcaformer_l3_in1k', \
'fcaformer_l4_in1k']
    """
    models = load_model_index()
    names = [
        entry['Name'] for key, entry in models.items()
        if fnmatch.fnmatchcase(key, pattern.lower()) and (
            task is None or task in _tasks(entry))
    ]
    return sorted(names)


def get_model_info(name: str) -> dict:
    """The metafile entry of a model (see :func:`load_model_index`).

    Raises:
        ValueError: For an unknown name; the message lists the closest
            names and how to see all of them.
    """
    models = load_model_index()
    entry = models.get(name.lower())
    if entry is None:
        close = difflib.get_close_matches(name.lower(), list(models), n=3)
        hint = f' Did you mean {", ".join(close)}?' if close else ''
        raise ValueError(
            f'fcaformer_mm has no model {name!r}.{hint} '
            '`fcaformer_mm.apis.list_models()` or `mim search fcaformer_mm` '
            'lists them all.')
    return entry


def get_config_path(name: str) -> str:
    """The absolute path of a model's config.

    Pass it to any API that takes a config file, for example
    ``MMSegInferencer(model=get_config_path('upernet_fcaformer_l2_ade20k'))``.

    Raises:
        ValueError: For an unknown name.
        FileNotFoundError: If the config listed in the index is missing.
    """
    entry = get_model_info(name)
    path = resource_root() / entry['Config']
    if not path.is_file():
        raise FileNotFoundError(
            f'The model index names {entry["Config"]} for {name!r}, but '
            f'{path} does not exist: reinstall fcaformer_mm.')
    return str(path)


def get_config(name: str):
    """A model's config, loaded (``mmengine.config.Config``)."""
    from mmengine.config import Config

    return Config.fromfile(get_config_path(name))


def get_inferencer(name: str,
                   weights: str | None = None,
                   device: str | None = None,
                   **kwargs: Any):
    """The host codebase's inferencer for a model of the package, by name.

    ``MMSegInferencer`` for mmseg configs, ``DetInferencer`` for mmdet
    configs and ``ImageClassificationInferencer`` for mmpretrain configs,
    picked by the config's ``default_scope``, each built from the config
    path.

    Args:
        name (str): Model name (see :func:`list_models`).
        weights (str, optional): Checkpoint to load. The package publishes
            no weights (the index has none), so without it the model keeps
            its random initialisation and the inferencer warns so.
            Defaults to None.
        device (str, optional): Device, e.g. ``'cpu'``. Defaults to None
            (the inferencer's choice).
        **kwargs: Other arguments of the inferencer's constructor.

    Example:
        >>> from fcaformer_mm.apis import get_inferencer
        >>> inferencer = get_inferencer('upernet_fcaformer_l2_ade20k',
        ...                             weights='iter_160000.pth')
        >>> result = inferencer('demo.jpg')  # {'predictions': HxW map}
    """
    from mmengine.registry import DefaultScope

    import fcaformer_mm  # noqa: F401  (registers the package's modules)

    config = get_config_path(name)
    scope = get_config(name).get('default_scope')
    if scope == 'mmseg':
        from mmseg.apis import MMSegInferencer as inferencer_type
        kwargs.update(weights=weights)
    elif scope == 'mmdet':
        from mmdet.apis import DetInferencer as inferencer_type
        kwargs.update(weights=weights)
    elif scope == 'mmpretrain':
        from mmpretrain.apis import (
            ImageClassificationInferencer as inferencer_type,
        )
        kwargs.update(pretrained=weights or False)
    else:
        raise ValueError(f'{config} has default_scope={scope!r}; '
                         'inferencers exist for mmseg, mmdet and mmpretrain '
                         'configs.')
    # Inferencers build their pipelines in the current default scope, which
    # an earlier Runner of the process may have left at another codebase.
    with DefaultScope.overwrite_default_scope(scope):
        return inferencer_type(model=config, device=device, **kwargs)


def register_mmpretrain_models() -> list[str]:
    """Register the classification models in mmpretrain's model hub.

    Through mmpretrain's public ``ModelHub.register_model_index``, so that
    ``mmpretrain.get_model``, ``list_models`` and ``inference_model`` take
    their names. Only metafiles whose models are all of
    :data:`MMPRETRAIN_TASKS` go there (mmpretrain builds every model it
    lists). Idempotent: a metafile whose models are all registered already
    is skipped.

    Returns:
        list[str]: The names registered by this call.

    Raises:
        ValueError: If mmpretrain already holds some, but not all, of a
            metafile's names (a clash with another model index).
    """
    from mmpretrain.apis import ModelHub

    root = resource_root()
    models = load_model_index(root)
    by_metafile: dict[str, list[str]] = {}
    for key, entry in models.items():
        by_metafile.setdefault(entry['Metafile'], []).append(key)
    registered = []
    for metafile, names in by_metafile.items():
        tasks = [t for n in names for t in _tasks(models[n])]
        if not tasks or any(t not in MMPRETRAIN_TASKS for t in tasks):
            continue
        present = [n for n in names if ModelHub.has(n)]
        if len(present) == len(names):
            continue
        if present:
            raise ValueError(
                f'mmpretrain\'s model hub already has {", ".join(present)} '
                f'but not the other models of {metafile}: another model '
                'index uses these names.')
        ModelHub.register_model_index(root / metafile, config_prefix=root)
        registered += names
    return registered


def register_model_hub(host_status: dict[str, str]) -> str:
    """What ``import fcaformer_mm`` runs: :func:`register_mmpretrain_models`
    where mmpretrain is installed and took the package's modules, with a
    warning, never an error, when it cannot be done.

    Args:
        host_status (dict[str, str]): The result of
            :func:`fcaformer_mm.hosts.register_in_hosts`.

    Returns:
        str: What was done, for the environment report.
    """
    import warnings

    mmpretrain = host_status.get('mmpretrain', 'not installed')
    if not mmpretrain.startswith('registered'):
        return f'skipped (mmpretrain: {mmpretrain})'
    try:
        names = register_mmpretrain_models()
    except (FileNotFoundError, ValueError) as exc:
        warnings.warn(
            f'fcaformer_mm: the classification models are not in '
            f"mmpretrain's model hub ({exc}); mmpretrain.get_model takes "
            'their config paths (fcaformer_mm.apis.get_config_path(NAME)).',
            stacklevel=3)
        return f'failed: {exc}'
    return (f'registered {len(names)} models' if names else
            'registered (already)')
