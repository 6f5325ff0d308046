"""The example configs that put FcaFormer into stock upstream configs
(mmseg's ConvNeXt UperNet, mmdet's RetinaNet) train for two iterations
under each codebase's own ``tools/train.py``, on synthetic data."""
from __future__ import annotations

from mmengine.config import Config

from fcaformer_mm.apis import get_config_path
from fcaformer_mm.utils.cpu import to_cpu_config

from .conftest import _det_options, options, run, seg_options
from .test_stock_tools import stock_tool

SEG_EXAMPLE = 'upernet_fcaformer_l2_stock_convnext_ade20k'
DET_EXAMPLE = 'retinanet_fcaformer_l2_fpn_1x_coco'


def test_stock_convnext_upernet_config(ade_root, tmp_path):
    """mmseg's AMP config on a CPU: the same config through
    ``to_cpu_config`` (OptimWrapper, BN), which keeps the constructor."""
    path = get_config_path(SEG_EXAMPLE)
    cfg = Config.fromfile(path)
    # The stock config is kept; only the backbone and constructor differ.
    assert cfg.model.backbone.type == 'FcaFormer'
    assert cfg.model.decode_head.in_channels == [96, 192, 384, 768]
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.paramwise_cfg.decay_type == 'stage_wise'
    cpu_config = tmp_path / 'cpu.py'
    to_cpu_config(cfg).dump(cpu_config)
    work_dir = tmp_path / 'work'
    proc = run([
        stock_tool('mmseg', 'train.py'), cpu_config, '--work-dir', work_dir
    ] + options(**seg_options(ade_root, max_iters=2)),
               cwd=tmp_path)
    assert 'FcaFormerLayerDecayOptimWrapperConstructor' in proc.stdout
    assert 'Iter(train) [2/2]' in proc.stdout
    assert (work_dir / 'iter_2.pth').is_file()


def test_stock_retinanet_config(coco_root, tmp_path):
    """mmdet's RetinaNet (a plain OptimWrapper): the example file itself."""
    opts = {
        k: v
        for k, v in _det_options(coco_root, cascade=False).items()
        if not k.startswith(('model.train_cfg', 'model.test_cfg',
                             'train_dataloader.dataset.pipeline'))
    }
    opts.update({
        'model.backbone.init_cfg': None,
        # RetinaNet's pipeline: Load, LoadAnnotations, Resize, Flip, Pack.
        'train_dataloader.dataset.pipeline.2.scale': '(160,128)',
        'train_dataloader.dataset.indices': 2,
        'train_cfg.max_epochs': 1,
        'train_cfg.val_interval': 100,
    })
    work_dir = tmp_path / 'work'
    proc = run([
        stock_tool('mmdet', 'train.py'),
        get_config_path(DET_EXAMPLE), '--work-dir', work_dir
    ] + options(**opts),
               cwd=tmp_path)
    assert 'FcaFormerLayerDecayOptimWrapperConstructor' in proc.stdout
    assert 'Epoch(train) [1][2/2]' in proc.stdout
    assert (work_dir / 'epoch_1.pth').is_file()
