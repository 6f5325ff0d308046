# Mask R-CNN with an FcaFormer-L2 backbone and FPN on COCO, 3x schedule
# (36 epochs) with multi-scale + crop augmentation on 8 GPUs x 2 images, AMP:
# the official recipe (hkzhang-git/FcaFormer, object_detection/configs/
# fcaformer/mask_rcnn_fcaformer_l2_set1_480-800_adamw_3x_coco_in1k.py) in
# mmdet 3.x form.
#
# The backbone starts from ImageNet-1k weights, given on the command line:
#   --cfg-options model.backbone.init_cfg.checkpoint=PATH
# Training without it stops with an error rather than starting from a random
# initialisation.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    './_base_/fcaformer_coco_3x_recipe.py',
]

model = dict(
    backbone=dict(
        _delete_=True,
        type='FcaFormer',
        arch='l2',
        out_type='featmap',
        out_indices=(0, 1, 2, 3),
        # The widths of ConvNeXt-T, so that the ConvNeXt necks fit.
        out_channels=(96, 192, 384, 768),
        drop_path_rate=0.2,
        layer_scale_init_value=1.0,
        init_cfg=dict(
            type='Pretrained', checkpoint=None, prefix='backbone.')),
    neck=dict(in_channels=[96, 192, 384, 768]))

# AdamW lr 1e-4, weight decay 0.05, layer decay rate 0.95 (from the recipe).
optim_wrapper = dict(
    optimizer=dict(lr=1e-4),
    paramwise_cfg=dict(
        decay_rate=0.95, decay_type='layer_wise_cab', num_layers=6))
