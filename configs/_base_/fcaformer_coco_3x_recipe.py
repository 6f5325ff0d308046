# The COCO 3x recipe that the official FcaFormer Mask R-CNN and Cascade Mask
# R-CNN configs share (hkzhang-git/FcaFormer, object_detection/configs/
# fcaformer/*_fcaformer_l2_set1_480-800_adamw_3x_coco_in1k.py), mmdet 3.x
# form: data and multi-scale + crop augmentation, 36-epoch schedule, AdamW
# with FcaFormer layer-wise lr decay, AMP. The model comes from the config
# that inherits this file together with an mmdet model base.
_base_ = [
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['fcaformer_mm'], allow_failed_imports=False)

# Augmentation from DETR / Sparse R-CNN: flip, then either a multi-scale
# resize, or a resize, a random crop and a multi-scale resize.
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='RandomChoice',
        transforms=[
            [
                dict(
                    type='RandomChoiceResize',
                    scales=[(480, 1333), (512, 1333), (544, 1333),
                            (576, 1333), (608, 1333), (640, 1333),
                            (672, 1333), (704, 1333), (736, 1333),
                            (768, 1333), (800, 1333)],
                    keep_ratio=True)
            ],
            [
                dict(
                    type='RandomChoiceResize',
                    scales=[(400, 1333), (500, 1333), (600, 1333)],
                    keep_ratio=True),
                dict(
                    type='RandomCrop',
                    crop_type='absolute_range',
                    crop_size=(384, 600),
                    allow_negative_crop=True),
                dict(
                    type='RandomChoiceResize',
                    scales=[(480, 1333), (512, 1333), (544, 1333),
                            (576, 1333), (608, 1333), (640, 1333),
                            (672, 1333), (704, 1333), (736, 1333),
                            (768, 1333), (800, 1333)],
                    keep_ratio=True)
            ],
        ]),
    dict(type='PackDetInputs'),
]
# 8 GPUs x 2 images.
train_dataloader = dict(batch_size=2, dataset=dict(pipeline=train_pipeline))

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)

# Linear warm-up from lr * 0.001 over 500 iterations; lr x 0.1 after epochs
# 27 and 33.
param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
        end=500),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[27, 33],
        gamma=0.1),
]

# Layer-wise lr decay over the FcaFormer stages (official 'layer_wise_cab'
# rule); the detector configs set lr and decay_rate. AMP with
# AmpOptimWrapper's default dynamic loss scale (the official runs' apex
# fp16). Nothing AMP-only is set, so that on a CPU the stock tools need only
# `--cfg-options optim_wrapper.type=OptimWrapper` (tools/train.py: `--cpu`).
optim_wrapper = dict(
    type='AmpOptimWrapper',
    constructor='FcaFormerLayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(
        decay_rate=0.95, decay_type='layer_wise_cab', num_layers=6),
    optimizer=dict(
        _delete_=True,
        type='AdamW',
        lr=1e-4,
        betas=(0.9, 0.999),
        weight_decay=0.05))
