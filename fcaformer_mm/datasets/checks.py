"""Check that the datasets of a config are where the config says.

The OpenMMLab datasets fail late and tersely when their files are missing
(an empty dataset, or ``FileNotFoundError`` on one json file, after the model
was built). :func:`check_dataset_layout` looks at every dataloader's dataset
before anything is built and, when files are missing, raises one
:class:`FileNotFoundError` that says which dataset, which paths, what the
expected layout is, which ``--cfg-options`` keys point the config elsewhere,
and how to get the data.

Only the config is read; no host codebase is imported.

Example:
    >>> from mmengine.config import Config
    >>> from fcaformer_mm.datasets.checks import check_dataset_layout
    >>> cfg = Config.fromfile('configs/upernet_fcaformer_l2_ade20k.py')
    >>> check_dataset_layout(cfg)  # doctest: +SKIP
"""
import os
import os.path as osp
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

#: The README section that explains how to get the real datasets.
README_SECTION = 'Preparing datasets'
#: The script that writes small synthetic datasets.
GENERATOR_SCRIPT = 'tools/dataset_converters/make_synthetic_data.py'

# Dataset types (without scope) by the layout family they follow.
_SEG_TYPES = {'ADE20KDataset', 'BaseSegDataset'}
_DET_TYPES = {'CocoDataset'}
_CLS_TYPES = {'ImageNet', 'ImageNet21k', 'CustomDataset'}

# The datasets the synthetic generator can write, by dataset type.
_GENERATOR_NAMES = {
    'ADE20KDataset': 'ade20k',
    'CocoDataset': 'coco',
    'ImageNet': 'imagenet',
}

_LAYOUTS = {
    'ADE20KDataset': """\
{root}    <- data_root (the unzipped ADEChallengeData2016)
├── images
│   ├── training       ADE_train_00000001.jpg, ...
│   └── validation     ADE_val_00000001.jpg, ...
└── annotations
    ├── training       ADE_train_00000001.png, ... (8-bit labels, 0 = other)
    └── validation     ADE_val_00000001.png, ...""",
    'CocoDataset': """\
{root}    <- data_root
├── annotations
│   ├── instances_train2017.json
│   └── instances_val2017.json
├── train2017          000000000009.jpg, ...
└── val2017            000000000139.jpg, ...""",
    'ImageNet': """\
{root}    <- data_root
├── train
│   ├── n01440764      n01440764_10026.JPEG, ...
│   └── ...            (1000 class folders)
├── val
│   ├── n01440764      ILSVRC2012_val_00000293.JPEG, ...
│   └── ...            (or all images in val/, with meta/val.txt)
└── meta               (optional: "path label" per line)
    ├── train.txt
    └── val.txt""",
}

# Dataloaders and the evaluators that go with them.
_EVALUATORS = {'val_dataloader': 'val_evaluator',
               'test_dataloader': 'test_evaluator'}


@dataclass
class _Missing:
    """One missing path of one dataset config."""

    path: str
    what: str
    keys: List[str] = field(default_factory=list)


@dataclass
class _Leaf:
    """One dataset config (no wrapper) and what is missing for it."""

    key: str
    type: str
    data_root: str
    missing: List[_Missing] = field(default_factory=list)


def _type_name(ds: Mapping) -> str:
    t = ds.get('type', '')
    if not isinstance(t, str):
        t = getattr(t, '__name__', str(t))
    return t.rsplit('.', 1)[-1]


def _join(root: Optional[str], path: Optional[str]) -> str:
    """Join as mmengine's ``BaseDataset`` joins data_root and prefixes."""
    path = path or ''
    if not root or osp.isabs(path):
        return path
    return osp.join(root, path) if path else root


def _is_remote(ds: Mapping) -> bool:
    backend = ds.get('backend_args') or {}
    if isinstance(backend, Mapping) and backend.get('backend') not in (
            None, 'local'):
        return True
    return any('://' in str(ds.get(k) or '') for k in ('data_root',
                                                       'ann_file'))


def _family(ds: Mapping, name: str) -> str:
    prefix = ds.get('data_prefix')
    if name in _SEG_TYPES or (isinstance(prefix, Mapping)
                              and 'seg_map_path' in prefix):
        return 'seg'
    if name in _DET_TYPES or str(ds.get('ann_file') or '').endswith('.json'):
        return 'det'
    if name in _CLS_TYPES or 'split' in ds:
        return 'cls'
    return 'other'


def _has_file(folder: str, suffix: str) -> bool:
    for _, _, names in os.walk(folder):
        if any(n.endswith(suffix) for n in names):
            return True
    return False


def _check_leaf(ds: Mapping, key: str) -> _Leaf:
    name = _type_name(ds)
    root = ds.get('data_root') or ''
    leaf = _Leaf(key, name, root)

    def need(path: str, what: str, is_dir: bool) -> bool:
        ok = osp.isdir(path) if is_dir else osp.isfile(path)
        if not ok:
            leaf.missing.append(_Missing(path, what, [key]))
        return ok

    family = _family(ds, name)
    ann_file = ds.get('ann_file') or ''
    prefix = ds.get('data_prefix') or {}
    if family == 'seg':
        img_suffix = ds.get('img_suffix', '.jpg')
        img_dir = _join(root, prefix.get('img_path', ''))
        if need(img_dir, 'folder of images', True) and not _has_file(
                img_dir, img_suffix):
            leaf.missing.append(_Missing(
                img_dir, f'images (*{img_suffix}); the folder is empty',
                [key]))
        if 'seg_map_path' in prefix:
            need(_join(root, prefix['seg_map_path']),
                 'folder of label maps (*'
                 f"{ds.get('seg_map_suffix', '.png')})", True)
        if ann_file:
            need(_join(root, ann_file), 'annotation (split) file', False)
    elif family == 'det':
        if ann_file:
            need(_join(root, ann_file), 'annotation file', False)
        img = prefix.get('img', '') if isinstance(prefix, Mapping) else prefix
        need(_join(root, img), 'folder of images', True)
    elif family == 'cls':
        img = prefix.get('img_path', '') if isinstance(
            prefix, Mapping) else prefix
        if not img and ds.get('split'):
            img = ds['split']
        need(_join(root, img), 'folder of images', True)
        if ann_file:
            need(_join(root, ann_file), 'annotation file', False)
    else:
        if ann_file:
            need(_join(root, ann_file), 'annotation file', False)
        prefixes = prefix.values() if isinstance(prefix, Mapping) else [
            prefix]
        for p in prefixes:
            if isinstance(p, str) and p:
                need(_join(root, p), 'data folder', True)
        if root and not (ann_file or prefix):
            need(root, 'data root', True)
    return leaf


def _walk(ds: Any, key: str, leaves: List[_Leaf]) -> None:
    """Visit the dataset configs under wrappers (Concat, Repeat, ...)."""
    if not isinstance(ds, Mapping):
        return
    if isinstance(ds.get('datasets'), (list, tuple)):
        for i, sub in enumerate(ds['datasets']):
            _walk(sub, f'{key}.datasets.{i}', leaves)
    elif isinstance(ds.get('dataset'), Mapping):
        _walk(ds['dataset'], f'{key}.dataset', leaves)
    elif not _is_remote(ds):
        leaves.append(_check_leaf(ds, key))


def _evaluator_missing(cfg: Mapping, loader_key: str) -> List[_Missing]:
    ev_key = _EVALUATORS.get(loader_key)
    evaluator = cfg.get(ev_key) if ev_key else None
    if isinstance(evaluator, Mapping):
        items = [(ev_key, evaluator)]
    elif isinstance(evaluator, (list, tuple)):
        items = [(f'{ev_key}.{i}', e) for i, e in enumerate(evaluator)]
    else:
        items = []
    missing = []
    for key, ev in items:
        ann_file = ev.get('ann_file') if isinstance(ev, Mapping) else None
        if (isinstance(ann_file, str) and ann_file and '://' not in ann_file
                and not osp.isfile(ann_file)):
            missing.append(_Missing(ann_file, 'annotation file of the '
                                    f'{_type_name(ev) or "evaluator"}',
                                    [f'{key}.ann_file']))
    return missing


def _display(path: str) -> str:
    return path if osp.isabs(path) else f'{path} (from {os.getcwd()})'


def _placeholder(data_root: str) -> str:
    base = osp.basename(osp.normpath(data_root)) if data_root else 'data'
    return f'/path/to/{base}'


def _format(leaves: List[_Leaf], evaluator_missing: List[_Missing],
            all_leaves: List[_Leaf], cfg: Mapping) -> str:
    filename = getattr(cfg, 'filename', None)
    lines = ['Dataset files not found' +
             (f' (config {filename}):' if filename else ':')]
    # One line per missing path, with every config key that uses it.
    seen: Dict[str, _Missing] = {}
    types: Dict[str, str] = {}
    for leaf in leaves:
        for m in leaf.missing:
            if m.path in seen:
                seen[m.path].keys.extend(m.keys)
            else:
                seen[m.path] = _Missing(m.path, m.what, list(m.keys))
                types[m.path] = leaf.type
    for m in evaluator_missing:
        seen.setdefault(m.path, _Missing(m.path, m.what, []))
        seen[m.path].keys.extend(m.keys)
        types.setdefault(m.path, 'evaluator')
    for path, m in seen.items():
        lines.append(f'  - {types[path]}: {m.what}: {_display(path)}')
        lines.append(f'      used by {", ".join(m.keys)}')

    failing_types = []
    for leaf in leaves:
        if leaf.missing and leaf.type not in failing_types:
            failing_types.append(leaf.type)
    for name in failing_types:
        roots = [leaf.data_root for leaf in leaves
                 if leaf.type == name and leaf.missing]
        root = roots[0]
        lines.append('')
        lines.append(f'Expected layout of {name}:')
        layout = _LAYOUTS.get(name)
        if layout:
            lines.extend('  ' + line for line in layout.format(
                root=root or '.').splitlines())
        else:
            for leaf in leaves:
                if leaf.type == name:
                    lines.extend(f'  {m.path}  ({m.what})'
                                 for m in leaf.missing)
        # Every checked dataset of this type that reads the same data_root
        # should move with it, failing or not.
        keys = [leaf.key for leaf in all_leaves
                if leaf.type == name and leaf.data_root in roots]
        value = _placeholder(root)
        options = [f'{k}.data_root={value}' for k in keys]
        if name in _DET_TYPES:
            for m in evaluator_missing:
                for k in m.keys:
                    options.append(f'{k}={value}/' + osp.relpath(
                        m.path, root or '.'))
        lines.append('')
        note = ('To use a copy elsewhere, set the data root of each '
                'dataloader')
        if 'data_root' in cfg:
            # mmengine substitutes config variables when it loads the file.
            note += (' (the top-level `data_root=...` alone changes nothing: '
                     'the config copied it into the dataloaders when it was '
                     'loaded)')
        lines.append(note + ':')
        lines.append('  --cfg-options ' + ' '.join(options))
        lines.append('')
        lines.append(f'To get the data: see "{README_SECTION}" in '
                     'README.md.')
        generator = _GENERATOR_NAMES.get(name)
        if generator:
            out = root.rstrip('/') if root else f'data/{generator}'
            lines.append(
                'For a small synthetic copy (a trial run, not for results), '
                'written where the config looks:')
            lines.append(f'  python3 {GENERATOR_SCRIPT} {generator} '
                         f'--out {out}')
    if evaluator_missing and not failing_types:
        lines.append('')
        lines.append('Set the evaluator\'s annotation file with --cfg-options'
                     ' ' + ' '.join(f'{k}=PATH' for m in evaluator_missing
                                    for k in m.keys))
    return '\n'.join(lines)


def check_dataset_layout(
        cfg: Mapping,
        dataloaders: Optional[Sequence[str]] = None) -> List[str]:
    """Check that every dataloader's dataset files exist.

    For each dataloader (by default ``train_dataloader``, ``val_dataloader``
    and ``test_dataloader``, those that the config has), the dataset config
    is unwrapped (``ConcatDataset``'s ``datasets``, the ``dataset`` of
    ``RepeatDataset``, ``ClassBalancedDataset``, ``MultiImageMixDataset``,
    ...) and the paths that each dataset will read are checked the way
    mmengine's ``BaseDataset`` joins them: ``data_root`` + ``data_prefix``
    folders and ``data_root`` + ``ann_file``. mmseg datasets (e.g.
    ``ADE20KDataset``) need their image folder (with at least one image) and
    label-map folder, mmdet ``CocoDataset`` its json and image folder,
    mmpretrain ``ImageNet`` its split folder (and ``ann_file`` if given);
    the ``ann_file`` of ``val_evaluator`` / ``test_evaluator`` (``CocoMetric``)
    is checked too. Remote storage (``backend_args`` or ``s3://`` paths) is
    not checked. Relative paths are taken from the current folder, as the
    runner takes them.

    Args:
        cfg (Mapping): The config (an ``mmengine.Config`` or a dict).
        dataloaders (Sequence[str], optional): The dataloader keys to check.
            Defaults to the train, val and test dataloaders that are set.

    Returns:
        list[str]: The config keys of the dataset configs checked, e.g.
        ``['train_dataloader.dataset', ...]``.

    Raises:
        FileNotFoundError: If a path is missing. The message names the
            dataset type, the missing paths, the expected layout, the
            ``--cfg-options`` to point each dataloader at another copy, and
            how to get the data (the README section :data:`README_SECTION`
            and :data:`GENERATOR_SCRIPT`).
    """
    if dataloaders is None:
        dataloaders = [k for k in ('train_dataloader', 'val_dataloader',
                                   'test_dataloader') if cfg.get(k)]
    leaves: List[_Leaf] = []
    evaluator_missing: List[_Missing] = []
    for key in dataloaders:
        loader = cfg.get(key)
        if not isinstance(loader, Mapping):
            continue
        _walk(loader.get('dataset'), f'{key}.dataset', leaves)
        evaluator_missing.extend(_evaluator_missing(cfg, key))
    failing = [leaf for leaf in leaves if leaf.missing]
    if failing or evaluator_missing:
        raise FileNotFoundError(
            _format(failing, evaluator_missing, leaves, cfg))
    return [leaf.key for leaf in leaves]


__all__ = ['check_dataset_layout', 'README_SECTION', 'GENERATOR_SCRIPT']
