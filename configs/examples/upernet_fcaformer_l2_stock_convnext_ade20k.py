# FcaFormer-L2 in mmseg's own ConvNeXt-T UperNet config, as it ships in the
# mmsegmentation wheel: everything but the backbone and the optimizer
# constructor (data, heads, AMP, 160k schedule, slide test) is mmseg's.
# An example of putting the backbone into any stock config; the official
# FcaFormer recipe is ../upernet_fcaformer_l2_ade20k.py.
_base_ = ('mmseg::convnext/'
          'convnext-tiny_upernet_8xb2-amp-160k_ade20k-512x512.py')

# 1. Load fcaformer_mm, which registers FcaFormer and its optimizer
#    constructor in mmseg's registries.
custom_imports = dict(imports=['fcaformer_mm'], allow_failed_imports=False)

# 2. Swap the backbone. `_delete_` drops ConvNeXt's arguments (and its
#    checkpoint URL). The dense model's 1x1 output heads map the stage widths
#    (96, 192, 320, 480 for L2) to `out_channels`; with the widths of
#    ConvNeXt-T the stock UPerHead (in_channels [96, 192, 384, 768]) and FCN
#    auxiliary head (384) fit unchanged.
model = dict(
    backbone=dict(
        _delete_=True,
        type='FcaFormer',
        arch='l2',
        out_type='featmap',
        out_indices=(0, 1, 2, 3),
        out_channels=(96, 192, 384, 768),
        drop_path_rate=0.1,
        layer_scale_init_value=1.0,
        # ImageNet weights, on the command line: --cfg-options
        #   model.backbone.init_cfg.checkpoint=PATH
        init_cfg=dict(type='Pretrained', checkpoint=None,
                      prefix='backbone.')))

# 3. mmseg's LearningRateDecayOptimizerConstructor knows only ConvNeXt and
#    BEiT parameter names and raises NotImplementedError for FcaFormer's; ours
#    takes the same paramwise_cfg (decay_rate 0.9, 'stage_wise', 6 layers).
optim_wrapper = dict(
    constructor='FcaFormerLayerDecayOptimWrapperConstructor')

# mmseg's visualizer, drawing on contiguous images: mmseg 1.2.2's own
# tools/analysis_tools/browse_dataset.py fails with its SegLocalVisualizer
# under any OpenCV (fcaformer_mm/visualization/seg_local_visualizer.py).
visualizer = dict(type='ContiguousSegLocalVisualizer')
