# FcaFormer-L2 in mmdet's own RetinaNet R-50 FPN 1x config, as it ships in
# the mmdetection wheel: data, anchors, head and the 12-epoch schedule are
# mmdet's; the backbone, the FPN's input widths and the optimizer change.
# An example of putting the backbone into any stock detector.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'

# 1. Load fcaformer_mm, which registers FcaFormer and its optimizer
#    constructor in mmdet's registries.
custom_imports = dict(imports=['fcaformer_mm'], allow_failed_imports=False)

# 2. Swap the backbone: stages 1-3 (strides 8, 16, 32), as RetinaNet uses
#    C3-C5. The dense model's 1x1 output heads give them the widths of
#    ConvNeXt-T (192, 384, 768); the FPN takes those from its first input
#    (start_level 0) and adds P6 and P7 on top ('on_input'), as mmdet's Swin
#    and PVT RetinaNets do.
model = dict(
    backbone=dict(
        _delete_=True,
        type='FcaFormer',
        arch='l2',
        out_type='featmap',
        out_indices=(1, 2, 3),
        out_channels=(96, 192, 384, 768),
        drop_path_rate=0.2,
        layer_scale_init_value=1.0,
        # ImageNet weights, on the command line: --cfg-options
        #   model.backbone.init_cfg.checkpoint=PATH
        init_cfg=dict(type='Pretrained', checkpoint=None,
                      prefix='backbone.')),
    neck=dict(in_channels=[192, 384, 768], start_level=0, num_outs=5))

# 3. AdamW with FcaFormer's layer-wise lr decay ('layer_wise_cab', the rule
#    of the official detection recipes) in place of the stock SGD.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='FcaFormerLayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(
        decay_rate=0.95, decay_type='layer_wise_cab', num_layers=6),
    clip_grad=None)
