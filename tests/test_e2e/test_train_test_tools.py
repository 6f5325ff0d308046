"""End to end on the CPU: ``tools/train.py --cpu`` for a few iterations,
``--resume`` from the checkpoint, then ``tools/test.py`` with the real
evaluators, for the UperNet, Mask R-CNN, Cascade Mask R-CNN and ImageNet
configs of the repository, on synthetic data at small sizes."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fcaformer_mm.compat import load_checkpoint_file

from .conftest import (
    CASCADE_CONFIG,
    CLS_CONFIG,
    MASK_RCNN_CONFIG,
    SEG_CONFIG,
    TOOLS,
    cascade_options,
    cls_options,
    mask_rcnn_options,
    options,
    run,
    seg_options,
)

TRAIN = TOOLS / 'train.py'
TEST = TOOLS / 'test.py'


def _load(path: Path) -> dict:
    # weights_only=True, mmengine's classes allowed inside the package's load.
    return load_checkpoint_file(str(path), 'cpu')


def _test_metrics(work_dir: Path) -> dict:
    """The metrics that the last ``tools/test.py`` run wrote
    (``<work_dir>/<timestamp>/<timestamp>.json``)."""
    files = sorted(p for p in work_dir.rglob('*.json')
                   if p.name != 'scalars.json')
    assert files, f'no metrics json under {work_dir}'
    lines = files[-1].read_text().splitlines()
    return json.loads(lines[-1])


def _assert_resumed(first: dict, resumed: dict, steps: int) -> None:
    """``resumed`` continues ``first`` by ``steps`` optimizer steps with the
    optimizer state, lr and logs that ``first`` saved."""
    assert resumed['meta']['iter'] == first['meta']['iter'] + steps
    assert resumed['meta']['epoch'] >= first['meta']['epoch']

    # The message hub was restored: the lr history of the first run is the
    # start of the resumed run's, which goes on from the saved lr.
    lr_first = first['message_hub']['log_scalars']['train/lr']
    lr_resumed = resumed['message_hub']['log_scalars']['train/lr']
    hist_first = np.asarray(lr_first._log_history)
    hist_resumed = np.asarray(lr_resumed._log_history)
    assert len(hist_resumed) == len(hist_first) + steps
    np.testing.assert_array_equal(hist_resumed[:len(hist_first)], hist_first)
    saved_lr = first['optimizer']['param_groups'][0]['lr']
    assert hist_resumed[len(hist_first)] == pytest.approx(saved_lr, rel=1e-9)
    # Warm-up: the lr keeps rising; a restarted schedule would drop back.
    assert np.all(np.diff(hist_resumed) > 0), hist_resumed

    # The same parameter groups (layer decay), with their lr moved on.
    groups_first = first['optimizer']['param_groups']
    groups_resumed = resumed['optimizer']['param_groups']
    assert len(groups_first) == len(groups_resumed) > 1
    for g1, g2 in zip(groups_first, groups_resumed):
        assert g1['params'] == g2['params']
        assert g1['initial_lr'] == g2['initial_lr']
        assert g1['weight_decay'] == g2['weight_decay']
        assert g2['lr'] > g1['lr']

    # Optimizer state carried over: AdamW's step counts go on.
    state_first = first['optimizer']['state']
    state_resumed = resumed['optimizer']['state']
    assert state_first and state_first.keys() == state_resumed.keys()
    for key, s1 in state_first.items():
        s2 = state_resumed[key]
        assert float(s2['step']) == float(s1['step']) + steps, key
        assert torch.isfinite(s2['exp_avg_sq']).all()

    # The schedulers went on from where they were; the warm-up, active in
    # both runs, by one step per iteration.
    schedulers_first = first['param_schedulers']
    schedulers_resumed = resumed['param_schedulers']
    assert len(schedulers_first) == len(schedulers_resumed)
    for s1, s2 in zip(schedulers_first, schedulers_resumed):
        assert s2['last_step'] >= s1['last_step']
    assert (schedulers_resumed[0]['last_step'] ==
            schedulers_first[0]['last_step'] + steps)


def _assert_metrics(metrics: dict, expected: dict) -> None:
    """Every key of ``expected`` is in ``metrics``: a finite number in the
    ``(low, high)`` range given."""
    for key, (low, high) in expected.items():
        assert key in metrics, f'{key} not in {sorted(metrics)}'
        value = float(metrics[key])
        assert math.isfinite(value) and low <= value <= high, (key, value)


def _train_resume(config: Path, opts: dict, work_dir: Path,
                  first_ckpt: str, resumed_ckpt: str,
                  resume_opts: dict) -> tuple[dict, dict, str]:
    """Train, resume with ``resume_opts`` (a longer schedule), load both
    checkpoints; return them and the resumed run's output."""
    run([TRAIN, config, '--cpu', '--work-dir', work_dir] + options(**opts),
        cwd=work_dir.parent)
    first = _load(work_dir / first_ckpt)
    proc = run([TRAIN, config, '--cpu', '--work-dir', work_dir, '--resume'] +
               options(**{**opts, **resume_opts}), cwd=work_dir.parent)
    assert 'resumed' in proc.stdout.lower()
    resumed = _load(work_dir / resumed_ckpt)
    return first, resumed, proc.stdout


def test_upernet_ade20k(ade_root, tmp_path):
    work_dir = tmp_path / 'upernet'
    opts = seg_options(ade_root, max_iters=2)
    first, resumed, log = _train_resume(
        SEG_CONFIG, opts, work_dir, 'iter_2.pth', 'iter_4.pth',
        {'train_cfg.max_iters': 4})
    assert 'OptimWrapper' in log
    _assert_resumed(first, resumed, steps=2)

    # Multi-scale + flip test through the config's tta_model/tta_pipeline,
    # with the predicted masks written (--out). The plain test path runs in
    # test_launchers (dist_test.sh) and test_checkpoint_safety.
    test_dir = tmp_path / 'upernet_test'
    proc = run([TEST, SEG_CONFIG, work_dir / 'iter_4.pth', '--cpu', '--tta',
                '--deploy', '--work-dir', test_dir, '--out',
                tmp_path / 'pred'] +
               options(**opts), cwd=tmp_path)
    assert 'SegTTAModel' in proc.stdout
    # --deploy: folded once the checkpoint is loaded (and checked to fit).
    assert 'Switched 1 FcaFormer backbone(s) to deploy mode' in proc.stdout
    _assert_metrics(_test_metrics(test_dir), {
        'mIoU': (0, 100),
        'aAcc': (0, 100),
        'mAcc': (0, 100)
    })
    assert len(list((tmp_path / 'pred').glob('*.png'))) == 2


COCO_METRICS = {
    f'coco/{kind}_mAP{suffix}': (-1, 1)
    for kind in ('bbox', 'segm') for suffix in ('', '_50', '_75', '_s',
                                                '_m', '_l')
}
COCO_METRICS.update({'coco/bbox_mAP': (0, 1), 'coco/segm_mAP': (0, 1)})


@pytest.mark.parametrize('config,make_opts', [
    (MASK_RCNN_CONFIG, mask_rcnn_options),
    (CASCADE_CONFIG, cascade_options),
],
                         ids=['mask_rcnn', 'cascade_mask_rcnn'])
def test_detectors_coco(config, make_opts, coco_root, tmp_path):
    work_dir = tmp_path / 'det'
    opts = make_opts(coco_root)
    # Two images, batch 1: two iterations per epoch.
    first, resumed, _ = _train_resume(config, opts, work_dir,
                                      'epoch_1.pth', 'epoch_2.pth',
                                      {'train_cfg.max_epochs': 2})
    assert first['meta']['epoch'] == 1 and resumed['meta']['epoch'] == 2
    _assert_resumed(first, resumed, steps=2)

    test_dir = tmp_path / 'det_test'
    out = tmp_path / 'det.pkl'
    run([TEST, config, work_dir / 'epoch_2.pth', '--cpu', '--work-dir',
         test_dir, '--out', out] + options(**opts), cwd=tmp_path)
    _assert_metrics(_test_metrics(test_dir), COCO_METRICS)
    assert out.stat().st_size > 0


def test_classifier_imagenet(imagenet_root, tmp_path):
    work_dir = tmp_path / 'cls'
    opts = cls_options(imagenet_root)
    first, resumed, _ = _train_resume(CLS_CONFIG, opts, work_dir,
                                      'epoch_1.pth', 'epoch_2.pth',
                                      {'train_cfg.max_epochs': 2})
    _assert_resumed(first, resumed, steps=2)
    # The EMA weights were saved and resumed too.
    assert 'ema_state_dict' in first and 'ema_state_dict' in resumed

    # What configs/README.md says of the recipe's EMAHook: a checkpoint
    # holds the EMA weights as state_dict and the raw ones under module.* in
    # ema_state_dict; tools/test.py evaluates the raw ones on request.
    raw = {
        k[len('module.'):]: v
        for k, v in resumed['ema_state_dict'].items()
        if k.startswith('module.')
    }
    assert raw.keys() == resumed['state_dict'].keys()
    assert any(not torch.equal(v, resumed['state_dict'][k])
               for k, v in raw.items() if v.is_floating_point())
    test_dir = tmp_path / 'cls_test'
    out = tmp_path / 'cls.pkl'
    run([TEST, CLS_CONFIG, work_dir / 'epoch_2.pth', '--cpu', '--work-dir',
         test_dir, '--out', out] +
        options(**opts, **{'custom_hooks.0.evaluate_on_origin': True}),
        cwd=tmp_path)
    _assert_metrics(_test_metrics(test_dir), {
        'accuracy/top1': (0, 100),
        'accuracy/top5': (0, 100),
        'accuracy/top1_origin': (0, 100),
    })
    assert out.stat().st_size > 0
