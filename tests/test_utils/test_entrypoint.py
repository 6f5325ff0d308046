"""The per-codebase option handling of tools/train.py and tools/test.py."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
from mmengine.config import Config

from fcaformer_mm.utils import entrypoint as ep

CONFIGS = Path(__file__).resolve().parents[2] / 'configs'
SEG = CONFIGS / 'upernet_fcaformer_l2_ade20k.py'
DET = CONFIGS / 'mask_rcnn_fcaformer_l2_fpn_3x_coco.py'
CASCADE = CONFIGS / 'cascade_mask_rcnn_fcaformer_l2_fpn_3x_coco.py'
CLS = CONFIGS / 'fcaformer_l1_in1k.py'


@pytest.fixture(scope='module')
def configs() -> dict:
    return {
        'seg': Config.fromfile(str(SEG)),
        'det': Config.fromfile(str(DET)),
        'cls': Config.fromfile(str(CLS))
    }


def test_scope_and_work_dir(tmp_path):
    cfg = ep.load_config(str(CLS), {'train_cfg.max_epochs': 2})
    assert ep.config_scope(cfg) == 'mmpretrain'
    assert cfg.work_dir == './work_dirs/fcaformer_l1_in1k'
    assert cfg.train_cfg.max_epochs == 2
    assert ep.load_config(str(CLS), work_dir=str(tmp_path)).work_dir == str(
        tmp_path)
    with pytest.raises(ValueError, match='default_scope'):
        ep.config_scope(Config(dict(default_scope='mmocr')))


def test_resume_and_amp(configs):
    cfg = copy.deepcopy(configs['cls'])
    ep.set_resume(cfg, None)
    assert cfg.resume is False
    ep.set_resume(cfg, 'auto')
    assert cfg.resume is True and cfg.load_from is None
    ep.set_resume(cfg, 'ckpt.pth')
    assert cfg.resume is True and cfg.load_from == 'ckpt.pth'
    ep.enable_amp(cfg)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'
    assert ep.has_amp_wrapper(cfg) and ep.has_amp_wrapper(configs['seg'])
    ep.enable_auto_scale_lr(cfg)
    assert cfg.auto_scale_lr.enable is True
    with pytest.raises(ValueError, match='base_batch_size'):
        ep.enable_auto_scale_lr(copy.deepcopy(configs['seg']))


def test_tta_seg_uses_the_config(configs):
    cfg = copy.deepcopy(configs['seg'])
    model = cfg.model.copy()
    ep.setup_tta(cfg)
    assert cfg.model.type == 'SegTTAModel'
    assert cfg.model.module == model
    assert cfg.test_dataloader.dataset.pipeline == cfg.tta_pipeline
    bare = Config(dict(default_scope='mmseg', model=dict(type='X')))
    with pytest.raises(ValueError, match='tta_model'):
        ep.setup_tta(bare)


@pytest.mark.parametrize('key,tta_type,pack', [
    ('det', 'DetTTAModel', 'PackDetInputs'),
    ('cls', 'mmpretrain.AverageClsScoreTTA', 'PackInputs'),
])
def test_tta_flip_defaults(configs, key, tta_type, pack):
    cfg = copy.deepcopy(configs[key])
    if key == 'det':
        # DetTTAModel merges boxes: the detector without its mask branch.
        cfg.model.roi_head.pop('mask_roi_extractor')
        cfg.model.roi_head.pop('mask_head')
    ep.setup_tta(cfg)
    assert cfg.model.type == tta_type
    assert cfg.model.module.backbone.type == 'FcaFormer'
    last = cfg.test_dataloader.dataset.pipeline[-1]
    assert last.type == 'TestTimeAug'
    assert [t.prob for t in last.transforms[0]] == [1., 0.]
    assert last.transforms[1][0].type == pack


@pytest.mark.parametrize('config', [DET, CASCADE])
def test_tta_of_instance_segmentation_is_a_clear_error(config):
    cfg = Config.fromfile(str(config))
    model = copy.deepcopy(cfg.model)
    with pytest.raises(ValueError, match='merges boxes only.*without --tta'):
        ep.setup_tta(cfg)
    assert cfg.model == model  # left as it was


def test_out_and_visualization(configs, tmp_path):
    seg = copy.deepcopy(configs['seg'])
    ep.setup_out(seg, str(tmp_path))
    assert seg.test_evaluator.output_dir == str(tmp_path)
    assert seg.test_evaluator.keep_results is True
    ep.setup_visualization(seg, show_dir=str(tmp_path))
    assert seg.default_hooks.visualization.draw is True
    assert seg.visualizer.save_dir == str(tmp_path)

    det = copy.deepcopy(configs['det'])
    ep.setup_out(det, 'x.pkl')  # a dumper is added to the runner instead
    assert 'output_dir' not in det.test_evaluator
    ep.setup_visualization(det, show=True, show_dir='vis', wait_time=1)
    hook = det.default_hooks.visualization
    assert (hook.draw, hook.show, hook.wait_time,
            hook.test_out_dir) == (True, True, 1, 'vis')
    with pytest.raises(ValueError, match='.pkl'):
        ep.add_out_dumper(None, det, 'results.json')

    cls = copy.deepcopy(configs['cls'])
    ep.setup_visualization(cls, show_dir='vis')
    assert cls.default_hooks.visualization.enable is True
    assert cls.default_hooks.visualization.out_dir == 'vis'


# --------------------------------------------------------------------------
# The work-dir guard of tools/train.py.
# --------------------------------------------------------------------------
def _earlier_run(work_dir: Path) -> dict:
    """A work dir as an earlier run leaves it; returns its files' bytes."""
    work_dir.mkdir(parents=True, exist_ok=True)
    files = {
        'epoch_1.pth': b'weights of epoch 1',
        'best_accuracy_top1_epoch_1.pth': b'best',
        'last_checkpoint': str(work_dir / 'epoch_1.pth').encode(),
        '20261130_120000.log': b'log',
    }
    for name, data in files.items():
        (work_dir / name).write_bytes(data)
    return files


def _unchanged(work_dir: Path, files: dict) -> bool:
    return all((work_dir / n).read_bytes() == d for n, d in files.items())


def test_work_dir_with_checkpoints_is_refused(tmp_path):
    work_dir = tmp_path / 'run'
    files = _earlier_run(work_dir)
    with pytest.raises(ep.WorkDirError) as info:
        ep.guard_work_dir(str(work_dir), resume=None)
    message = str(info.value)
    for expected in ('best_accuracy_top1_epoch_1.pth, epoch_1.pth, '
                     'last_checkpoint', 'last_checkpoint names',
                     '--resume', '--work-dir', '--overwrite'):
        assert expected in message, expected
    assert _unchanged(work_dir, files)
    # A fresh or empty work dir, and one with logs only, are fine.
    assert ep.guard_work_dir(str(tmp_path / 'new'), resume=None) == []
    (tmp_path / 'logs').mkdir()
    (tmp_path / 'logs' / 'run.log').write_text('log')
    assert ep.guard_work_dir(str(tmp_path / 'logs'), resume=None) == []


def test_work_dir_resume_and_overwrite(tmp_path):
    work_dir = tmp_path / 'run'
    files = _earlier_run(work_dir)
    assert ep.guard_work_dir(str(work_dir), resume='auto') == []
    assert ep.guard_work_dir(
        str(work_dir), resume=str(work_dir / 'epoch_1.pth')) == []
    with pytest.raises(ep.WorkDirError, match='give one of them'):
        ep.guard_work_dir(str(work_dir), resume='auto', overwrite=True)
    # Other ranks of a distributed run do not delete.
    assert ep.guard_work_dir(str(work_dir), None, overwrite=True,
                             delete=False)
    assert _unchanged(work_dir, files)
    deleted = ep.guard_work_dir(str(work_dir), None, overwrite=True)
    assert deleted == ['best_accuracy_top1_epoch_1.pth', 'epoch_1.pth',
                       'last_checkpoint']
    assert sorted(p.name for p in work_dir.iterdir()) == [
        '20261130_120000.log'
    ]


def test_auto_resume_needs_a_checkpoint_to_resume_from(tmp_path):
    work_dir = tmp_path / 'run'
    _earlier_run(work_dir)
    (work_dir / 'last_checkpoint').write_text('')
    with pytest.raises(ep.WorkDirError,
                       match=r'last_checkpoint is empty.*--resume '
                       r'\S+epoch_1\.pth'):
        ep.guard_work_dir(str(work_dir), resume='auto')
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'epoch_9.pth'))
    with pytest.raises(ep.WorkDirError,
                       match=r'names \S+epoch_9\.pth, which does not exist'):
        ep.guard_work_dir(str(work_dir), resume='auto')
    (work_dir / 'last_checkpoint').unlink()
    with pytest.raises(ep.WorkDirError,
                       match='no last_checkpoint file.*would start a new run'):
        ep.guard_work_dir(str(work_dir), resume='auto')
    # Nothing at all to resume: a new run, as mmengine does.
    assert ep.guard_work_dir(str(tmp_path / 'empty'), resume='auto') == []
