# Cascade Mask R-CNN with an FcaFormer-L2 backbone and FPN on COCO: three
# 4conv1fc box heads with SyncBN and a GIoU loss on decoded boxes, 3x
# schedule (36 epochs) with multi-scale + crop augmentation on 8 GPUs x 2
# images, AMP: the official recipe (hkzhang-git/FcaFormer,
# object_detection/configs/fcaformer/
# cascade_mask_rcnn_fcaformer_l2_set1_480-800_adamw_3x_coco_in1k.py) in
# mmdet 3.x form.
#
# The backbone starts from ImageNet-1k weights, given on the command line:
#   --cfg-options model.backbone.init_cfg.checkpoint=PATH
# Training without it stops with an error rather than starting from a random
# initialisation.
_base_ = [
    'mmdet::_base_/models/cascade-mask-rcnn_r50_fpn.py',
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
    neck=dict(in_channels=[96, 192, 384, 768]),
    # Three 4conv1fc stages that differ only in their target stds.
    roi_head=dict(bbox_head=[
        dict(
            type='ConvFCBBoxHead',
            num_shared_convs=4,
            num_shared_fcs=1,
            in_channels=256,
            conv_out_channels=256,
            fc_out_channels=1024,
            roi_feat_size=7,
            num_classes=80,
            bbox_coder=dict(
                type='DeltaXYWHBBoxCoder',
                target_means=[0., 0., 0., 0.],
                target_stds=target_stds),
            reg_class_agnostic=False,
            reg_decoded_bbox=True,
            norm_cfg=dict(type='SyncBN', requires_grad=True),
            loss_cls=dict(
                type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
            loss_bbox=dict(type='GIoULoss', loss_weight=10.0))
        for target_stds in ([0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1],
                            [0.033, 0.033, 0.067, 0.067])
    ]))

# AdamW lr 2e-4, weight decay 0.05, layer decay rate 0.7.
optim_wrapper = dict(
    optimizer=dict(lr=2e-4),
    paramwise_cfg=dict(
        decay_rate=0.7, decay_type='layer_wise_cab', num_layers=6))
