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
