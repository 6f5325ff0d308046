# The official FcaFormer ImageNet-1k recipe (hkzhang-git/FcaFormer,
# image_classification/main.py and scripts/fca_l*.sh) in mmpretrain form:
# 300 epochs on 8 GPUs x 128 images, AdamW lr 2e-3, weight decay 0.05,
# 20 warm-up epochs, cosine decay to 1e-6, EMA 0.9999 (validation uses the
# EMA weights), RandAugment m9 mstd 0.5, Mixup 0.8 / CutMix 1.0, label
# smoothing 0.1, random erasing 0.25, bicubic 224 input, full precision.
# The configs fcaformer_l<N>_in1k.py set the arch, its drop-path rate and
# the head width.
_base_ = [
    # timm's ImageNet transforms: RandomResizedCrop 224 bicubic, flip,
    # RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25 ('pixel' mode);
    # test: short side 256 bicubic, centre crop 224.
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['fcaformer_mm'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(type='FcaFormer', out_type='avg_featmap'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        # Mixed targets are smoothed as timm does (Mixup with
        # label_smoothing=0.1 and a soft-target cross entropy).
        loss=dict(
            type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        # The official initialisation of the classifier.
        init_cfg=dict(type='TruncNormal', layer='Linear', std=.02, bias=0.)),
    # timm's Mixup: per batch, Mixup (alpha 0.8) or CutMix (alpha 1.0) with
    # equal probability.
    train_cfg=dict(augments=[
        dict(type='Mixup', alpha=0.8),
        dict(type='CutMix', alpha=1.0),
    ]),
)

# 8 GPUs x 128 images = 1024 per iteration.
train_dataloader = dict(batch_size=128, drop_last=True)

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=2e-3, weight_decay=0.05, eps=1e-8,
        betas=(0.9, 0.999)),
    # No weight decay for biases and 1-D parameters (norms, layer scales),
    # as the official parameter groups.
    paramwise_cfg=dict(bias_decay_mult=0.0, flat_decay_mult=0.0),
    clip_grad=None)

# Per-iteration schedule: linear warm-up from (almost) 0 over 20 epochs,
# then cosine decay to 1e-6 at epoch 300.
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-6,
        by_epoch=True,
        begin=0,
        end=20,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        eta_min=1e-6,
        by_epoch=True,
        begin=20,
        end=300,
        convert_to_iter_based=True),
]

train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
val_cfg = dict()
test_cfg = dict()

# timm's ModelEma averages the buffers (BatchNorm statistics) as well.
# What mmpretrain's EMAHook does here (configs/README.md, "EMA weights in
# the ImageNet recipe"):
# - validation runs on the EMA weights (evaluate_on_ema=True, the default),
#   so save_best='auto' below picks the best checkpoint by EMA accuracy;
# - every checkpoint saves the EMA weights as `state_dict` and the raw
#   weights as `ema_state_dict` (keys `module.*`); --resume restores both;
# - tools/test.py tests the EMA weights. To test the raw ones add
#   `--cfg-options custom_hooks.0.evaluate_on_ema=False` (or
#   `evaluate_on_origin=True` for both: metrics `*_origin`).
custom_hooks = [
    dict(
        type='EMAHook',
        momentum=1e-4,
        update_buffers=True,
        priority='ABOVE_NORMAL')
]
default_hooks = dict(
    checkpoint=dict(
        type='CheckpointHook', interval=1, max_keep_ckpts=3,
        save_best='auto'))

# The lr above is for a total batch of 1024 (`--auto-scale-lr` rescales it).
auto_scale_lr = dict(base_batch_size=1024)

# mmpretrain's visualizer, restated: inherited through `mmpretrain::` it
# carries `_scope_='mmpretrain'`, which mmpretrain's own
# tools/visualization/browse_dataset.py passes on to
# `UniversalVisualizer(**cfg.visualizer)` and which that refuses.
visualizer = dict(
    _delete_=True,
    type='UniversalVisualizer',
    vis_backends=[dict(type='LocalVisBackend')])
