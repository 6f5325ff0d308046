"""The example configs that put FcaFormer into stock upstream configs
(mmseg's ConvNeXt UperNet, mmdet's RetinaNet) train for two iterations
under each codebase's own ``tools/train.py``, on synthetic data (the runs
of the ``stock_trainings`` fixture)."""
from __future__ import annotations

from mmengine.config import Config

from fcaformer_mm.apis import get_config_path

SEG_EXAMPLE = 'upernet_fcaformer_l2_stock_convnext_ade20k'


def test_stock_convnext_upernet_config(stock_trainings):
    """mmseg's AMP config on a CPU: the same config through
    ``to_cpu_config`` (OptimWrapper, BN), which keeps the constructor."""
    cfg = Config.fromfile(get_config_path(SEG_EXAMPLE))
    # The stock config is kept; only the backbone and constructor differ.
    assert cfg.model.backbone.type == 'FcaFormer'
    assert cfg.model.decode_head.in_channels == [96, 192, 384, 768]
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.paramwise_cfg.decay_type == 'stage_wise'
    run = stock_trainings['convnext_example']
    output = run.check()
    assert 'FcaFormerLayerDecayOptimWrapperConstructor' in output
    assert 'Iter(train) [2/2]' in output
    assert (run.folder / 'iter_2.pth').is_file()


def test_stock_retinanet_config(stock_trainings):
    """mmdet's RetinaNet (a plain OptimWrapper): the example file itself."""
    run = stock_trainings['retinanet_example']
    output = run.check()
    assert 'FcaFormerLayerDecayOptimWrapperConstructor' in output
    assert 'Epoch(train) [1][2/2]' in output
    assert (run.folder / 'epoch_1.pth').is_file()
