# UperNet with an FcaFormer-L2 backbone on ADE20K, 512x512 crops, 160k
# iterations on 8 GPUs x 2 images, AMP: the official recipe
# (hkzhang-git/FcaFormer, semantic-segmentation/configs/fcaformer/
# upernet_fcaformer_l2_160k_ade20k_ms.py) in mmseg 1.x form.
#
# The backbone starts from ImageNet-1k weights, given on the command line:
#   --cfg-options model.backbone.init_cfg.checkpoint=PATH
# (an official classification checkpoint or an fcaformer_mm/mmpretrain one).
# Training without it stops with an error rather than starting from a random
# initialisation. The published 47.6 mIoU is the multi-scale + flip result:
# test with `tools/test.py CONFIG CHECKPOINT --tta`.
_base_ = [
    'mmseg::_base_/models/upernet_convnext.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]
custom_imports = dict(imports=['fcaformer_mm'], allow_failed_imports=False)
# The ConvNeXt checkpoint of the model base is not used here.
checkpoint_file = None

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        _delete_=True,
        type='FcaFormer',
        arch='l2',
        out_type='featmap',
        out_indices=(0, 1, 2, 3),
        # The widths of ConvNeXt-T, so that the ConvNeXt heads fit.
        out_channels=(96, 192, 384, 768),
        drop_path_rate=0.1,
        layer_scale_init_value=1.0,
        init_cfg=dict(
            type='Pretrained', checkpoint=checkpoint_file,
            prefix='backbone.')),
    decode_head=dict(in_channels=[96, 192, 384, 768], num_classes=150),
    auxiliary_head=dict(in_channels=384, num_classes=150),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)),
)

# Multi-scale + flip test (`--tta`). As in mmseg 0.x's MultiScaleFlipAug,
# which the official numbers come from, the scales are ratios of the test
# scale (2048, 512), not of the original image size.
img_scale = (2048, 512)
img_ratios = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
tta_model = dict(type='SegTTAModel')
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(
        type='TestTimeAug',
        transforms=[
            [
                dict(
                    type='Resize',
                    scale=(int(img_scale[0] * r), int(img_scale[1] * r)),
                    keep_ratio=True) for r in img_ratios
            ],
            [
                dict(type='RandomFlip', prob=0., direction='horizontal'),
                dict(type='RandomFlip', prob=1., direction='horizontal')
            ],
            [dict(type='LoadAnnotations', reduce_zero_label=True)],
            [dict(type='PackSegInputs')],
        ])
]

# Layer-wise lr decay over the FcaFormer stages (official 'stage_wise' rule).
# AMP with AmpOptimWrapper's default dynamic loss scale (the official runs'
# apex fp16). Nothing AMP-only is set, so that on a CPU the stock tools need
# only `--cfg-options optim_wrapper.type=OptimWrapper` (tools/train.py:
# `--cpu`).
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    optimizer=dict(
        type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.01),
    constructor='FcaFormerLayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(decay_rate=0.9, decay_type='stage_wise', num_layers=6))

# Linear warm-up from lr * 1e-6 over 1500 iterations, then poly decay to 0.
param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0,
        end=1500),
    dict(
        type='PolyLR',
        power=1.0,
        eta_min=0.0,
        by_epoch=False,
        begin=1500,
        end=160000),
]

# As the official runs: evaluate and save every 16k iterations.
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=160000, val_interval=16000)
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=16000))

# 8 GPUs x 2 images.
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader

# mmseg's visualizer, drawing on contiguous images: mmseg 1.2.2's own
# tools/analysis_tools/browse_dataset.py fails with its SegLocalVisualizer
# under any OpenCV (fcaformer_mm/visualization/seg_local_visualizer.py).
visualizer = dict(type='ContiguousSegLocalVisualizer')
