"""check_dataset_layout: on the repo's configs, a missing dataset raises
FileNotFoundError that names the dataset, the paths and the keys to set;
data generated where the config looks, or pointed at with the keys, passes.
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
from mmengine.config import Config, ConfigDict

from fcaformer_mm.datasets.checks import check_dataset_layout
from fcaformer_mm.datasets.synthetic import (
    make_ade20k,
    make_coco,
    make_imagenet,
)

CONFIG_DIR = Path(__file__).parents[2] / 'configs'
LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')

# config, host, generator, dataset type, default data_root, generator kwargs
CASES = {
    'ade20k': ('upernet_fcaformer_l2_ade20k.py', 'mmseg', make_ade20k,
               'ADE20KDataset', 'data/ade/ADEChallengeData2016',
               dict(num_train=1, num_val=1, size=(32, 32))),
    'coco': ('mask_rcnn_fcaformer_l2_fpn_3x_coco.py', 'mmdet', make_coco,
             'CocoDataset', 'data/coco',
             dict(num_train=1, num_val=1, size=(32, 32))),
    'imagenet': ('fcaformer_l2_in1k.py', 'mmpretrain', make_imagenet,
                 'ImageNet', 'data/imagenet',
                 dict(num_classes=1, num_train_per_class=1,
                      num_val_per_class=1, size=(32, 32))),
}

_CONFIGS: dict = {}


def load(name: str) -> Config:
    """Load a repo config once per session; each test gets a copy."""
    config, host = CASES[name][:2]
    pytest.importorskip(host)
    if name not in _CONFIGS:
        _CONFIGS[name] = Config.fromfile(str(CONFIG_DIR / config))
    return copy.deepcopy(_CONFIGS[name])


def point(cfg: Config, name: str, root: Path) -> None:
    """What the printed --cfg-options do."""
    options = {f'{k}.dataset.data_root': str(root) for k in LOADERS}
    if name == 'coco':
        ann = str(root / 'annotations' / 'instances_val2017.json')
        options.update({'val_evaluator.ann_file': ann,
                        'test_evaluator.ann_file': ann})
    cfg.merge_from_dict(options)


@pytest.mark.parametrize('name', sorted(CASES))
def test_config_defaults_missing_then_generated(name, tmp_path,
                                                monkeypatch):
    """Relative data roots, from a folder without data: the message names
    the path, the keys, the README and the generator; generating the data
    where the message says makes the check pass."""
    cfg = load(name)
    _, _, make, ds_type, data_root, kwargs = CASES[name]
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as info:
        check_dataset_layout(cfg)
    msg = str(info.value)
    assert ds_type in msg
    assert data_root in msg
    for key in LOADERS:
        assert f'{key}.dataset.data_root=/path/to/' in msg
    assert 'Preparing datasets' in msg
    assert 'make_synthetic_data.py' in msg
    assert f'--out {data_root}' in msg
    assert '├──' in msg  # the expected layout

    make(tmp_path / data_root, **kwargs)
    assert check_dataset_layout(cfg) == [f'{k}.dataset' for k in LOADERS]


def test_ade20k_message_details(tmp_path):
    cfg = load('ade20k')
    point(cfg, 'ade20k', tmp_path / 'nowhere')
    with pytest.raises(FileNotFoundError) as info:
        check_dataset_layout(cfg)
    msg = str(info.value)
    missing = tmp_path / 'nowhere' / 'images' / 'training'
    assert str(missing) in msg
    assert str(tmp_path / 'nowhere' / 'annotations' / 'validation') in msg
    assert 'used by val_dataloader.dataset, test_dataloader.dataset' in msg
    assert 'upernet_fcaformer_l2_ade20k.py' in msg
    # The config has a top-level data_root: say why it is not enough.
    assert 'top-level `data_root=...` alone changes nothing' in msg
    assert 'ADE_train_00000001.png' in msg


@pytest.mark.parametrize('name', sorted(CASES))
def test_pointed_at_generated_data(name, tmp_path):
    cfg = load(name)
    _, _, make, _, _, kwargs = CASES[name]
    root = make(tmp_path / name, **kwargs)
    point(cfg, name, root)
    assert len(check_dataset_layout(cfg)) == 3
    assert check_dataset_layout(cfg, ['val_dataloader']) == [
        'val_dataloader.dataset']


def test_coco_evaluator_ann_file(tmp_path):
    cfg = load('coco')
    root = make_coco(tmp_path / 'coco', **CASES['coco'][5])
    # Only the dataloaders pointed: CocoMetric would still read the default.
    cfg.merge_from_dict(
        {f'{k}.dataset.data_root': str(root) for k in LOADERS})
    with pytest.raises(FileNotFoundError) as info:
        check_dataset_layout(cfg, ['val_dataloader'])
    msg = str(info.value)
    assert 'val_evaluator.ann_file' in msg
    assert 'data/coco/annotations/instances_val2017.json' in msg
    # The training dataloader has no evaluator.
    check_dataset_layout(cfg, ['train_dataloader'])


def test_coco_message_lists_evaluator_options(tmp_path):
    cfg = load('coco')
    point(cfg, 'coco', tmp_path / 'none')
    with pytest.raises(FileNotFoundError) as info:
        check_dataset_layout(cfg)
    msg = str(info.value)
    assert 'CocoDataset' in msg
    assert str(tmp_path / 'none' / 'annotations' /
               'instances_train2017.json') in msg
    assert ('val_evaluator.ann_file=/path/to/none/annotations/'
            'instances_val2017.json') in msg


def seg_dataset(root: Path, split: str = 'training') -> dict:
    return dict(type='ADE20KDataset', data_root=str(root),
                data_prefix=dict(img_path=f'images/{split}',
                                 seg_map_path=f'annotations/{split}'))


def test_wrappers(tmp_path):
    good = make_ade20k(tmp_path / 'ade', num_train=1, num_val=1,
                       size=(32, 32))
    cfg = ConfigDict(train_dataloader=dict(dataset=dict(
        type='RepeatDataset', times=2,
        dataset=dict(type='ConcatDataset', datasets=[
            seg_dataset(good), seg_dataset(tmp_path / 'missing')]))))
    with pytest.raises(FileNotFoundError) as info:
        check_dataset_layout(cfg)
    msg = str(info.value)
    key = 'train_dataloader.dataset.dataset.datasets.1'
    assert f'used by {key}' in msg
    assert f'{key}.data_root=/path/to/missing' in msg
    assert str(tmp_path / 'missing' / 'images' / 'training') in msg
    assert str(good) not in msg.split('Expected layout')[0]

    cfg.train_dataloader.dataset.dataset.datasets[1] = seg_dataset(good)
    assert check_dataset_layout(cfg) == [
        'train_dataloader.dataset.dataset.datasets.0',
        'train_dataloader.dataset.dataset.datasets.1']


def test_empty_image_folder(tmp_path):
    root = tmp_path / 'ade'
    for sub in ('images/training', 'annotations/training'):
        (root / sub).mkdir(parents=True)
    cfg = ConfigDict(train_dataloader=dict(dataset=seg_dataset(root)))
    with pytest.raises(FileNotFoundError, match='the folder is empty'):
        check_dataset_layout(cfg)


def test_skips_remote_and_missing_loaders():
    cfg = ConfigDict(
        train_dataloader=dict(dataset=dict(
            type='CocoDataset', data_root='s3://bucket/coco/',
            ann_file='annotations/instances_train2017.json',
            data_prefix=dict(img='train2017/'))),
        val_dataloader=dict(dataset=dict(
            type='ImageNet', data_root='data/imagenet', split='val',
            backend_args=dict(backend='petrel'))),
        test_dataloader=None)
    assert check_dataset_layout(cfg) == []


def test_other_dataset_types(tmp_path):
    (tmp_path / 'imgs').mkdir()
    cfg = ConfigDict(train_dataloader=dict(dataset=dict(
        type='mmdet.SomeDataset', data_root=str(tmp_path),
        ann_file='ann.txt', data_prefix=dict(img='imgs'))))
    with pytest.raises(FileNotFoundError) as info:
        check_dataset_layout(cfg)
    msg = str(info.value)
    assert 'SomeDataset: annotation file' in msg
    assert str(tmp_path / 'ann.txt') in msg
    assert 'make_synthetic_data.py' not in msg
    (tmp_path / 'ann.txt').write_text('')
    check_dataset_layout(cfg)
