"""The synthetic datasets: the stock mmseg / mmdet / mmpretrain datasets read
them, the COCO evaluator scores their ground truth 1.0, they are
deterministic, learnable (class = shape + colour) and never overwrite what a
user made."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcaformer_mm.datasets.synthetic import (
    ADE20K_CLASSES,
    COCO_DRAWN,
    COLOURS,
    IMAGENET_CLASSES,
    MANIFEST_NAME,
    make_ade20k,
    make_coco,
    make_imagenet,
    polygon_mask,
    shape_polygon,
)

REPO = Path(__file__).parents[2]
CLI = REPO / 'tools' / 'dataset_converters' / 'make_synthetic_data.py'
#: Only catches a hung command.
HANG_TIMEOUT = 600


def files_of(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob('*')) if p.is_file()}


def label_of(dataset, index: int) -> int:
    return int(dataset.get_data_info(index)['gt_label'])


def nearest_colour(rgb: np.ndarray) -> str:
    return min(COLOURS, key=lambda c: np.abs(rgb - COLOURS[c]).sum())


def test_each_cue_alone_is_not_enough():
    """Every shape comes in two colours and every colour in two shapes."""
    for table in ([v[1:] for v in ADE20K_CLASSES.values() if v[1]],
                  [v[1:] for v in COCO_DRAWN.values()],
                  [v[2:] for v in IMAGENET_CLASSES[:4]]):
        assert len(set(table)) == len(table)
        for shape, colour in table:
            assert sum(s == shape for s, _ in table) >= 2 or sum(
                c == colour for _, c in table) >= 2


def test_polygon_mask_matches_pycocotools():
    mask_utils = pytest.importorskip('pycocotools.mask')
    for i, shape in enumerate(['circle', 'square', 'triangle', 'star']):
        poly = shape_polygon(shape, 40.3 + i, 30.7, 17.2, 0.2)
        mine = polygon_mask(poly, 64, 80)
        rle = mask_utils.frPyObjects([poly.ravel().tolist()], 64, 80)
        theirs = mask_utils.decode(mask_utils.merge(rle)).astype(bool)
        # Both rasterise the same polygon; they differ only along edges.
        assert (mine ^ theirs).sum() < 0.06 * theirs.sum()


# --------------------------------------------------------------------------
# ADE20K
# --------------------------------------------------------------------------
def test_ade20k_layout_and_mmseg_dataset(tmp_path):
    pytest.importorskip('mmseg')
    from mmcv.transforms import LoadImageFromFile
    from mmseg.datasets import ADE20KDataset
    from mmseg.datasets.transforms import LoadAnnotations

    root = make_ade20k(tmp_path / 'ade', num_train=6, num_val=3,
                       size=(64, 96))
    assert root == tmp_path / 'ade'
    assert sorted(p.name for p in (root / 'images/training').iterdir())[
        0] == 'ADE_train_00000001.jpg'
    png = Image.open(root / 'annotations/validation/ADE_val_00000003.png')
    assert png.mode == 'L' and png.size == (96, 64)

    pipeline = [LoadImageFromFile(), LoadAnnotations(reduce_zero_label=True)]
    seen = set()
    for split, num in (('training', 6), ('validation', 3)):
        ds = ADE20KDataset(
            data_root=str(root),
            data_prefix=dict(img_path=f'images/{split}',
                             seg_map_path=f'annotations/{split}'),
            pipeline=pipeline)
        assert len(ds) == num
        for i in range(num):
            out = ds[i]
            gt = out['gt_seg_map']
            assert out['img'].shape == (64, 96, 3)
            assert gt.shape == (64, 96)
            values = set(np.unique(gt).tolist())
            assert values <= set(range(150)) | {255}
            assert 0 in values and 255 in values  # wall and outlines
            seen |= values
            # Learnable: each labelled region has its class's colour.
            for label in values - {0, 255}:
                _, _, colour = ADE20K_CLASSES[label + 1]
                region = out['img'][gt == label][:, ::-1]  # BGR -> RGB
                assert nearest_colour(region.mean(0)) == colour
    expected = {v - 1 for v in ADE20K_CLASSES} | {255}
    assert seen <= expected and len(seen) >= 4


def test_ade20k_config_pipeline_reads_it(tmp_path):
    """The repo config's own train/val datasets, pointed at the data."""
    pytest.importorskip('mmseg')
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmseg.registry import DATASETS

    root = make_ade20k(tmp_path / 'ade', num_train=2, num_val=1)
    cfg = Config.fromfile(
        str(REPO / 'configs' / 'upernet_fcaformer_l2_ade20k.py'))
    cfg.merge_from_dict({f'{k}.dataset.data_root': str(root)
                         for k in ('train_dataloader', 'val_dataloader')})
    with DefaultScope.overwrite_default_scope('mmseg'):
        train = DATASETS.build(cfg.train_dataloader.dataset)
        val = DATASETS.build(cfg.val_dataloader.dataset)
        assert len(train) == 2 and len(val) == 1
        sample = train[0]
        # Random resize (short side 256..1024 here), then a crop of at
        # most 512x512; the data preprocessor pads later.
        h, w = sample['inputs'].shape[-2:]
        assert 250 <= h <= 512 and h == w
        assert sample['data_samples'].gt_sem_seg.data.shape[-2:] == (h, w)
        assert val[0]['data_samples'].gt_sem_seg.data.shape[-2:] == (128,
                                                                     128)


# --------------------------------------------------------------------------
# COCO
# --------------------------------------------------------------------------
def test_coco_json_is_real_coco(tmp_path):
    coco_api = pytest.importorskip('pycocotools.coco')
    mask_utils = pytest.importorskip('pycocotools.mask')
    root = make_coco(tmp_path / 'coco', num_train=5, num_val=3)
    coco = coco_api.COCO(str(root / 'annotations/instances_train2017.json'))
    assert len(coco.getCatIds()) == 80
    assert coco.loadCats([1, 3, 90])[2]['name'] == 'toothbrush'
    assert len(coco.getImgIds()) == 5
    assert len(coco.getAnnIds(imgIds=[1])) >= 3  # several instances
    assert len(coco.getAnnIds(imgIds=[2])) >= 3
    ann_ids = coco.getAnnIds()
    assert len(set(ann_ids)) == len(ann_ids)
    for ann in coco.loadAnns(ann_ids):
        assert ann['category_id'] in COCO_DRAWN and ann['iscrowd'] == 0
        img_info = coco.loadImgs(ann['image_id'])[0]
        img = np.asarray(Image.open(root / 'train2017' /
                                    img_info['file_name']))
        assert img.shape == (img_info['height'], img_info['width'], 3)
        mask = coco.annToMask(ann).astype(bool)
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        # area: the polygon's; bbox: its tight bounds, as in COCO.
        assert abs(ann['area'] - mask_utils.area(rle)) < 0.06 * ann['area']
        x, y, w, h = ann['bbox']
        poly = np.array(ann['segmentation'][0]).reshape(-1, 2)
        np.testing.assert_allclose(poly.min(0), [x, y], atol=0.011)
        np.testing.assert_allclose(poly.max(0), [x + w, y + h], atol=0.011)
        # Learnable: the object has its category's colour.
        colour = COCO_DRAWN[ann['category_id']][2]
        assert nearest_colour(img[mask].mean(0)) == colour


def test_coco_mmdet_dataset_and_metric(tmp_path):
    pytest.importorskip('mmdet')
    import torch
    from mmcv.transforms import LoadImageFromFile
    from mmdet.datasets import CocoDataset
    from mmdet.datasets.transforms import LoadAnnotations
    from mmdet.evaluation import CocoMetric
    from pycocotools.coco import COCO

    root = make_coco(tmp_path / 'coco', num_train=4, num_val=3)
    pipeline = [LoadImageFromFile(),
                LoadAnnotations(with_bbox=True, with_mask=True)]
    train = CocoDataset(
        data_root=str(root), ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'), pipeline=pipeline,
        filter_cfg=dict(filter_empty_gt=True, min_size=32))
    assert len(train) == 4
    labels = np.concatenate([train[i]['gt_bboxes_labels']
                             for i in range(4)])
    # Real ids map to the usual labels: person 0, car 2, bus 5, dog 16.
    assert set(labels.tolist()) <= {0, 2, 5, 16}
    assert train[0]['gt_masks'].masks.shape[0] >= 3

    ann_file = str(root / 'annotations/instances_val2017.json')
    coco = COCO(ann_file)
    cat2label = {c: i for i, c in enumerate(sorted(coco.getCatIds()))}
    metric = CocoMetric(ann_file=ann_file, metric=['bbox', 'segm'])
    metric.dataset_meta = dict(classes=CocoDataset.METAINFO['classes'])
    samples = []
    for img_id in coco.getImgIds():
        info = coco.loadImgs(img_id)[0]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
        boxes = [[x, y, x + w, y + h] for x, y, w, h in
                 (a['bbox'] for a in anns)]
        masks = np.stack([coco.annToMask(a) for a in anns]).astype(bool)
        samples.append(dict(
            img_id=img_id, ori_shape=(info['height'], info['width']),
            pred_instances=dict(
                bboxes=torch.tensor(boxes, dtype=torch.float64),
                scores=torch.ones(len(anns)),
                labels=torch.tensor([cat2label[a['category_id']]
                                     for a in anns]),
                masks=torch.from_numpy(masks))))
    metric.process({}, samples)
    result = metric.evaluate(len(samples))
    assert result['coco/bbox_mAP'] == pytest.approx(1.0)
    assert result['coco/segm_mAP'] == pytest.approx(1.0)


# --------------------------------------------------------------------------
# ImageNet
# --------------------------------------------------------------------------
def test_imagenet_mmpretrain_dataset(tmp_path):
    pytest.importorskip('mmpretrain')
    from mmpretrain.datasets import ImageNet

    root = make_imagenet(tmp_path / 'in', num_classes=4,
                         num_train_per_class=3, num_val_per_class=2,
                         size=(48, 40))
    wnids = [c[0] for c in IMAGENET_CLASSES[:4]]
    assert sorted(p.name for p in (root / 'train').iterdir()) == wnids
    assert (root / 'val' / 'n01440764' /
            'ILSVRC2012_val_00000001.JPEG').is_file()
    train = ImageNet(data_root=str(root), split='train')
    val = ImageNet(data_root=str(root), split='val')
    assert len(train) == 12 and len(val) == 8
    assert [label_of(train, i) for i in range(0, 12, 3)] == [
        0, 1, 2, 3]
    # Real ImageNet-1k labels: label 0 is the tench (n01440764).
    assert train.CLASSES[0].startswith('tench')
    assert {label_of(val, i) for i in range(8)} == {0, 1, 2, 3}

    # Class folders only, with the classes named in the config.
    plain = make_imagenet(tmp_path / 'plain', num_classes=4,
                          num_train_per_class=3, num_val_per_class=2,
                          size=(48, 40), with_meta=False)
    assert not (plain / 'meta').exists()
    folders = ImageNet(data_root=str(plain), split='train',
                       metainfo=dict(classes=wnids))
    assert len(folders) == 12 and len(folders.CLASSES) == 4
    assert [d['gt_label'] for d in folders.load_data_list()] == [
        d['gt_label'] for d in train.load_data_list()]

    # Learnable: the image's colour is its class's.
    for i in range(12):
        img = np.asarray(Image.open(train.get_data_info(i)['img_path']))
        colour = IMAGENET_CLASSES[label_of(train, i)][3]
        # The background is greyish, the object saturated.
        pixels = img.reshape(-1, 3).astype(float)
        vivid = pixels[np.ptp(pixels, axis=1) > 100]
        assert len(vivid) > 0.05 * len(pixels)
        assert nearest_colour(np.median(vivid, axis=0)) == colour


# --------------------------------------------------------------------------
# Determinism and safety
# --------------------------------------------------------------------------
@pytest.mark.parametrize('make,kwargs', [
    (make_ade20k, dict(num_train=3, num_val=2, size=(48, 48))),
    (make_coco, dict(num_train=3, num_val=2, size=(48, 64))),
    (make_imagenet, dict(num_classes=2, num_train_per_class=2,
                         num_val_per_class=1, size=(32, 32))),
])
def test_same_seed_same_bytes(tmp_path, make, kwargs):
    a = files_of(make(tmp_path / 'a', seed=3, **kwargs))
    b = files_of(make(tmp_path / 'b', seed=3, **kwargs))
    c = files_of(make(tmp_path / 'c', seed=4, **kwargs))
    assert a == b
    assert a.keys() == c.keys() and a != c


def test_refuses_to_overwrite(tmp_path):
    root = tmp_path / 'ade'
    (root / 'images' / 'training').mkdir(parents=True)
    mine = root / 'images' / 'training' / 'my_photo.jpg'
    mine.write_bytes(b'mine')
    with pytest.raises(FileExistsError, match='not empty'):
        make_ade20k(root, num_train=2, num_val=1, size=(32, 32))
    # Even with overwrite, a file that no generator made stays.
    with pytest.raises(FileExistsError, match='my_photo.jpg'):
        make_ade20k(root, num_train=2, num_val=1, size=(32, 32),
                    overwrite=True)
    assert mine.read_bytes() == b'mine'
    assert sorted(p.name for p in root.rglob('*')) == [
        'images', 'my_photo.jpg', 'training']


def test_overwrite_replaces_only_generated_files(tmp_path):
    root = make_coco(tmp_path / 'coco', num_train=4, num_val=2,
                     size=(48, 64))
    notes = root / 'notes.txt'
    notes.write_text('keep me')
    with pytest.raises(FileExistsError, match='overwrite=True'):
        make_coco(root, num_train=2, num_val=1, size=(48, 64))
    assert len(list((root / 'train2017').iterdir())) == 4
    make_coco(root, num_train=2, num_val=1, size=(48, 64), overwrite=True)
    # No stale images from the first run; the user's file is kept.
    assert len(list((root / 'train2017').iterdir())) == 2
    assert notes.read_text() == 'keep me'
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    assert 'notes.txt' not in manifest['files']
    assert manifest['params']['num_train'] == 2
    assert files_of(root).keys() == set(manifest['files']) | {
        'notes.txt', MANIFEST_NAME}


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match='size'):
        make_ade20k(tmp_path / 'a', size=(16, 16))
    with pytest.raises(ValueError, match='num_classes'):
        make_imagenet(tmp_path / 'b', num_classes=11)
    with pytest.raises(ValueError, match='num_train'):
        make_coco(tmp_path / 'c', num_train=-1)
    assert not any(tmp_path.iterdir())


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------
#: Python that runs the tool where torch and mmengine cannot be imported
#: (``None`` in ``sys.modules`` is how Python marks a module as missing).
NO_STACK_SITECUSTOMIZE = """import sys
sys.modules.update(torch=None, mmengine=None)
"""


def run_cli(args: list, tmp_path: Path,
            stack: bool = True) -> subprocess.CompletedProcess:
    """Run the tool as a command; ``stack=False``: in a Python where torch
    and mmengine cannot be imported, as the tool promises to work there."""
    env = dict(os.environ)
    path = [str(REPO)]
    if not stack:
        site = tmp_path / 'no_stack_site'
        site.mkdir(exist_ok=True)
        (site / 'sitecustomize.py').write_text(NO_STACK_SITECUSTOMIZE)
        path.insert(0, str(site))
    env['PYTHONPATH'] = os.pathsep.join(
        path + [p for p in [env.get('PYTHONPATH')] if p])
    return subprocess.run([sys.executable] + [str(a) for a in args],
                          env=env, capture_output=True, text=True,
                          timeout=HANG_TIMEOUT)


def test_library_imports_without_torch_and_mmengine(tmp_path):
    proc = run_cli([
        '-c', 'import sys, fcaformer_mm.datasets.synthetic as s, '
        'fcaformer_mm as f; print(f.WITH_STACK, sorted(m for m in '
        'sys.modules if m.split(".")[0] in ("mmcv", "mmseg", "mmdet", '
        '"mmpretrain")))'
    ], tmp_path, stack=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ['False', '[]']


def test_cli(tmp_path):
    out = tmp_path / 'imagenet'
    proc = run_cli([CLI, 'imagenet', '--out', out, '--num-train', 2,
                    '--num-val', 1, '--size', 32, 40, '--num-classes', 3],
                   tmp_path, stack=False)
    assert proc.returncode == 0, proc.stderr
    assert str(out) in proc.stdout
    assert f'train_dataloader.dataset.data_root={out}' in proc.stdout
    assert len(list((out / 'train').rglob('*.JPEG'))) == 6
    assert Image.open(next((out / 'val').rglob('*.JPEG'))).size == (40, 32)

    proc = run_cli([CLI, 'imagenet', '--out', out], tmp_path, stack=False)
    assert proc.returncode == 1
    assert 'not empty' in proc.stderr
    proc = run_cli([CLI, 'imagenet', '--out', out, '--overwrite',
                    '--num-train', 1, '--num-val', 1], tmp_path,
                   stack=False)
    assert proc.returncode == 0, proc.stderr
    assert len(list((out / 'train').rglob('*.JPEG'))) == 4


def test_cli_coco_options(tmp_path):
    """With the whole stack installed, as the README runs it."""
    out = tmp_path / 'coco'
    proc = run_cli([CLI, 'coco', '--out', out, '--num-train', 1,
                    '--num-val', 1], tmp_path)
    assert proc.returncode == 0, proc.stderr
    ann = out / 'annotations' / 'instances_val2017.json'
    assert f'val_evaluator.ann_file={ann}' in proc.stdout
    assert ann.is_file()
