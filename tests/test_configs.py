"""The configs load, build their models in their scopes on the CPU, and hold
the official recipes (REFERENCE sections 1 and 3)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

CONFIG_DIR = Path(__file__).parents[1] / 'configs'

SEG = 'upernet_fcaformer_l2_ade20k.py'
MASK_RCNN = 'mask_rcnn_fcaformer_l2_fpn_3x_coco.py'
CASCADE = 'cascade_mask_rcnn_fcaformer_l2_fpn_3x_coco.py'
CLS = {arch: f'fcaformer_{arch}_in1k.py' for arch in ('l1', 'l2', 'l3', 'l4')}

#: Host package of each config's default scope.
HOSTS = {
    SEG: 'mmseg',
    MASK_RCNN: 'mmdet',
    CASCADE: 'mmdet',
    **{name: 'mmpretrain'
       for name in CLS.values()},
}

#: Parameters of the whole models in millions (REFERENCE sections 1, 2).
PARAMS_M = {
    SEG: 48.8,
    MASK_RCNN: 36.6,
    CASCADE: 74.4,
    CLS['l1']: 6.19,
    CLS['l2']: 16.28,
    CLS['l3']: 27.89,
    CLS['l4']: 65.64,
}


def load(name: str) -> Config:
    pytest.importorskip(HOSTS[name])
    return Config.fromfile(str(CONFIG_DIR / name))


def build(cfg: Config) -> torch.nn.Module:
    """Build ``cfg.model`` in the config's scope, as mmengine's Runner."""
    from mmengine.registry import MODELS
    from mmengine.utils import import_modules_from_strings

    import_modules_from_strings(**cfg.custom_imports)
    model_cfg = cfg.model.copy()
    if cfg.get('data_preprocessor') is not None:
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    with scope_of(cfg):
        return MODELS.build(model_cfg)


def scope_of(cfg: Config):
    """The config's default scope, for this block only: later tests keep
    theirs."""
    from mmengine.registry import DefaultScope

    return DefaultScope.overwrite_default_scope(cfg.default_scope)


def build_optim_wrapper(model: torch.nn.Module, cfg: Config):
    """Build the config's optimizer wrapper; AMP needs a GPU, so plain."""
    from mmengine.optim import build_optim_wrapper as build_wrapper

    optim_cfg = cfg.optim_wrapper.copy()
    # The AMP configs set nothing AMP-only: switching the type is all a CPU
    # run under the stock tools needs (--cfg-options
    # optim_wrapper.type=OptimWrapper).
    assert not {'loss_scale', 'dtype', 'use_fsdp'} & set(optim_cfg)
    optim_cfg['type'] = 'OptimWrapper'
    with scope_of(cfg):
        return build_wrapper(model, optim_cfg)


def find(pipeline: list, type_name: str) -> dict:
    matches = [t for t in pipeline if t['type'] == type_name]
    assert len(matches) == 1, (type_name, pipeline)
    return matches[0]


# -------------------------------------------------------------- all configs
@pytest.mark.parametrize('name', list(HOSTS))
def test_config_builds_in_its_scope(name):
    cfg = load(name)
    assert cfg.default_scope == HOSTS[name]
    assert cfg.custom_imports == dict(
        imports=['fcaformer_mm'], allow_failed_imports=False)
    assert cfg.model.backbone.type == 'FcaFormer'
    model = build(cfg)
    assert type(model.backbone).__name__ == 'FcaFormer'
    params = sum(p.numel() for p in model.parameters())
    assert params / 1e6 == pytest.approx(PARAMS_M[name], abs=0.051)


@pytest.mark.parametrize('name', [SEG, MASK_RCNN, CASCADE])
def test_dense_backbone(name):
    cfg = load(name)
    backbone = cfg.model.backbone
    assert backbone.arch == 'l2'
    assert backbone.out_type == 'featmap'
    assert list(backbone.out_indices) == [0, 1, 2, 3]
    assert list(backbone.out_channels) == [96, 192, 384, 768]
    assert backbone.layer_scale_init_value == 1.0
    assert backbone.drop_path_rate == (0.1 if name == SEG else 0.2)
    assert backbone.init_cfg == dict(
        type='Pretrained', checkpoint=None, prefix='backbone.')


@pytest.mark.parametrize('name', [SEG, MASK_RCNN, CASCADE])
def test_missing_checkpoint_is_an_error(name):
    """Without a checkpoint, training stops instead of starting at random."""
    cfg = load(name)
    model = build(cfg)
    with scope_of(cfg), pytest.raises(ValueError, match='checkpoint'):
        model.init_weights()


def test_checkpoint_from_cfg_options(tmp_path):
    """``--cfg-options model.backbone.init_cfg.checkpoint=PATH`` loads an
    official classification checkpoint into the dense backbone."""
    from fcaformer_mm.models import FcaFormer

    source = FcaFormer(arch='l2', out_type='avg_featmap')
    path = tmp_path / 'checkpoint-best.pth'
    torch.save({'model': source.state_dict(), 'epoch': 299}, path)

    cfg = load(SEG)
    cfg.merge_from_dict({'model.backbone.init_cfg.checkpoint': str(path)})
    model = build(cfg)
    with scope_of(cfg):
        model.init_weights()
    loaded = model.backbone.state_dict()
    for key, value in source.state_dict().items():
        if key in loaded:
            assert torch.equal(loaded[key], value), key
    assert torch.equal(loaded['layer_2.blocks.3.qkv.weight'],
                       source.state_dict()['layer_2.blocks.3.qkv.weight'])


# ----------------------------------------------------------- UperNet ADE20K
def test_upernet_ade20k_recipe():
    cfg = load(SEG)
    head, aux = cfg.model.decode_head, cfg.model.auxiliary_head
    assert head.type == 'UPerHead'
    assert head.in_channels == [96, 192, 384, 768]
    assert head.channels == 512
    assert tuple(head.pool_scales) == (1, 2, 3, 6)
    assert head.dropout_ratio == 0.1
    assert head.norm_cfg.type == 'SyncBN'
    assert head.num_classes == 150
    assert aux.type == 'FCNHead'
    assert (aux.in_channels, aux.in_index) == (384, 2)
    assert (aux.channels, aux.num_convs) == (256, 1)
    assert aux.loss_decode.loss_weight == 0.4
    assert aux.num_classes == 150

    train = cfg.train_dataloader.dataset.pipeline
    assert find(train, 'LoadAnnotations').reduce_zero_label is True
    resize = find(train, 'RandomResize')
    assert tuple(resize.scale) == (2048, 512)
    assert tuple(resize.ratio_range) == (0.5, 2.0)
    crop = find(train, 'RandomCrop')
    assert tuple(crop.crop_size) == (512, 512)
    assert crop.cat_max_ratio == 0.75
    assert find(train, 'RandomFlip').prob == 0.5
    find(train, 'PhotoMetricDistortion')
    assert cfg.train_dataloader.batch_size == 2

    wrapper = cfg.optim_wrapper
    assert wrapper.type == 'AmpOptimWrapper'
    assert wrapper.constructor == 'FcaFormerLayerDecayOptimWrapperConstructor'
    assert wrapper.paramwise_cfg == dict(
        decay_rate=0.9, decay_type='stage_wise', num_layers=6)
    assert wrapper.optimizer == dict(
        type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.01)

    warmup, poly = cfg.param_scheduler
    assert warmup.type == 'LinearLR' and not warmup.by_epoch
    assert (warmup.begin, warmup.end) == (0, 1500)
    assert warmup.start_factor == 1e-6
    assert poly.type == 'PolyLR' and not poly.by_epoch
    assert (poly.begin, poly.end) == (1500, 160000)
    assert (poly.power, poly.eta_min) == (1.0, 0.0)
    assert cfg.train_cfg.max_iters == 160000

    assert cfg.model.test_cfg == dict(
        mode='slide', crop_size=(512, 512), stride=(341, 341))


def test_upernet_ade20k_tta():
    """Multi-scale (0.5-1.75 of 2048x512) and flip test behind ``--tta``."""
    cfg = load(SEG)
    assert cfg.tta_model.type == 'SegTTAModel'
    tta = find(cfg.tta_pipeline, 'TestTimeAug')
    resizes, flips = tta.transforms[0], tta.transforms[1]
    ratios = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
    assert [tuple(r.scale) for r in resizes] == [
        (int(2048 * r), int(512 * r)) for r in ratios
    ]
    assert all(r.keep_ratio for r in resizes)
    assert sorted(f.prob for f in flips) == [0., 1.]


def test_upernet_ade20k_layer_decay_groups():
    cfg = load(SEG)
    model = build(cfg)
    wrapper = build_optim_wrapper(model, cfg)
    groups = {g['group_name']: g for g in wrapper.optimizer.param_groups}
    # stage_wise: the stem gets id 0, stage i blocks i + 1, heads 7.
    assert groups['layer_0_decay']['lr'] == pytest.approx(1e-4 * 0.9**7)
    assert groups['layer_3_decay']['lr'] == pytest.approx(1e-4 * 0.9**4)
    assert groups['layer_7_decay']['lr'] == pytest.approx(1e-4)
    assert groups['layer_7_no_decay']['weight_decay'] == 0.
    assert groups['layer_7_decay']['weight_decay'] == 0.01


# ---------------------------------------------------------------- COCO 3x
@pytest.mark.parametrize('name', [MASK_RCNN, CASCADE])
def test_coco_3x_recipe(name):
    cfg = load(name)
    assert cfg.model.neck.type == 'FPN'
    assert cfg.model.neck.in_channels == [96, 192, 384, 768]
    assert (cfg.model.neck.out_channels, cfg.model.neck.num_outs) == (256, 5)
    assert cfg.model.data_preprocessor.pad_size_divisor == 32

    train = cfg.train_dataloader.dataset.pipeline
    assert find(train, 'RandomFlip').prob == 0.5
    choice = find(train, 'RandomChoice')
    plain, cropped = choice.transforms
    scales_480_800 = [(s, 1333) for s in range(480, 801, 32)]
    assert [t.type for t in plain] == ['RandomChoiceResize']
    assert [tuple(s) for s in plain[0].scales] == scales_480_800
    assert [t.type for t in cropped] == [
        'RandomChoiceResize', 'RandomCrop', 'RandomChoiceResize'
    ]
    assert [tuple(s) for s in cropped[0].scales] == [(400, 1333),
                                                     (500, 1333),
                                                     (600, 1333)]
    assert cropped[1].crop_type == 'absolute_range'
    assert tuple(cropped[1].crop_size) == (384, 600)
    assert cropped[1].allow_negative_crop is True
    assert [tuple(s) for s in cropped[2].scales] == scales_480_800
    assert all(t.keep_ratio for t in (plain[0], cropped[0], cropped[2]))
    assert cfg.train_dataloader.batch_size == 2

    assert cfg.train_cfg.max_epochs == 36
    warmup, steps = cfg.param_scheduler
    assert warmup.type == 'LinearLR' and not warmup.by_epoch
    assert (warmup.begin, warmup.end, warmup.start_factor) == (0, 500, 0.001)
    assert steps.type == 'MultiStepLR' and steps.by_epoch
    assert list(steps.milestones) == [27, 33] and steps.gamma == 0.1

    wrapper = cfg.optim_wrapper
    assert wrapper.type == 'AmpOptimWrapper'
    assert wrapper.constructor == 'FcaFormerLayerDecayOptimWrapperConstructor'
    lr, rate = (1e-4, 0.95) if name == MASK_RCNN else (2e-4, 0.7)
    assert wrapper.optimizer == dict(
        type='AdamW', lr=lr, betas=(0.9, 0.999), weight_decay=0.05)
    assert wrapper.paramwise_cfg == dict(
        decay_rate=rate, decay_type='layer_wise_cab', num_layers=6)


def test_cascade_heads():
    cfg = load(CASCADE)
    heads = cfg.model.roi_head.bbox_head
    stds = [[0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1],
            [0.033, 0.033, 0.067, 0.067]]
    assert len(heads) == 3
    for head, std in zip(heads, stds):
        assert head.type == 'ConvFCBBoxHead'
        assert (head.num_shared_convs, head.num_shared_fcs) == (4, 1)
        assert head.norm_cfg.type == 'SyncBN'
        assert head.reg_decoded_bbox is True
        assert head.loss_bbox == dict(type='GIoULoss', loss_weight=10.0)
        assert head.bbox_coder.target_stds == std


@pytest.mark.parametrize('name', [MASK_RCNN, CASCADE])
def test_coco_layer_decay_groups(name):
    cfg = load(name)
    model = build(cfg)
    wrapper = build_optim_wrapper(model, cfg)
    base_lr = cfg.optim_wrapper.optimizer.lr
    rate = cfg.optim_wrapper.paramwise_cfg.decay_rate
    groups = {g['group_name']: g for g in wrapper.optimizer.param_groups}
    # layer_wise_cab, num_layers 6: stage 2 blocks 0-2 -> 3, 3-5 -> 4, 6 -> 5
    assert groups['layer_0_decay']['lr'] == pytest.approx(base_lr * rate**7)
    assert groups['layer_5_decay']['lr'] == pytest.approx(base_lr * rate**2)
    assert groups['layer_7_decay']['lr'] == pytest.approx(base_lr)
    # Every parameter of the detector is in a group.
    names = {n for g in groups.values() for n in g['param_names']}
    assert names == {n for n, _ in model.named_parameters()}
    assert any(n.startswith('roi_head.mask_head') for n in names)


# ------------------------------------------------------------- ImageNet-1k
@pytest.mark.parametrize(
    'arch, drop_path, width',
    [('l1', 0.0, 320), ('l2', 0.1, 480), ('l3', 0.2, 512), ('l4', 0.4, 768)])
def test_in1k_arch(arch, drop_path, width):
    cfg = load(CLS[arch])
    assert cfg.model.type == 'ImageClassifier'
    backbone = cfg.model.backbone
    assert (backbone.arch, backbone.out_type) == (arch, 'avg_featmap')
    assert backbone.drop_path_rate == drop_path
    assert cfg.model.head.type == 'LinearClsHead'
    assert cfg.model.head.in_channels == width
    assert cfg.model.head.num_classes == 1000


def test_in1k_recipe():
    cfg = load(CLS['l2'])
    head = cfg.model.head
    assert head.loss == dict(
        type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')
    augments = {a.type: a.alpha for a in cfg.model.train_cfg.augments}
    assert augments == {'Mixup': 0.8, 'CutMix': 1.0}

    train = cfg.train_dataloader.dataset.pipeline
    crop = find(train, 'RandomResizedCrop')
    assert (crop.scale, crop.interpolation) == (224, 'bicubic')
    rand_aug = find(train, 'RandAugment')
    assert rand_aug.magnitude_level == 9 and rand_aug.magnitude_std == 0.5
    assert rand_aug.num_policies == 2
    assert find(train, 'RandomErasing').erase_prob == 0.25
    test = cfg.val_dataloader.dataset.pipeline
    assert find(test, 'ResizeEdge').interpolation == 'bicubic'
    assert find(test, 'CenterCrop').crop_size == 224

    # 8 GPUs x 128 = 1024 images per step.
    assert cfg.train_dataloader.batch_size * 8 == 1024
    assert cfg.auto_scale_lr.base_batch_size == 1024
    assert cfg.optim_wrapper.optimizer == dict(
        type='AdamW', lr=2e-3, weight_decay=0.05, eps=1e-8,
        betas=(0.9, 0.999))
    assert cfg.train_cfg.max_epochs == 300
    warmup, cosine = cfg.param_scheduler
    assert warmup.type == 'LinearLR' and warmup.end == 20
    assert warmup.convert_to_iter_based
    assert cosine.type == 'CosineAnnealingLR'
    assert (cosine.begin, cosine.end, cosine.eta_min) == (20, 300, 1e-6)
    assert cosine.convert_to_iter_based
    ema = find(cfg.custom_hooks, 'EMAHook')
    assert 1 - ema.momentum == pytest.approx(0.9999)
    assert ema.update_buffers is True


def test_in1k_weight_decay_groups():
    """No weight decay for biases and 1-D parameters, as upstream."""
    cfg = load(CLS['l1'])
    model = build(cfg)
    wrapper = build_optim_wrapper(model, cfg)
    decay = {}
    for group in wrapper.optimizer.param_groups:
        for param in group['params']:
            decay[id(param)] = group['weight_decay']
    for name, param in model.named_parameters():
        expected = 0. if (param.ndim == 1 or name.endswith('.bias')) else 0.05
        assert math.isclose(decay[id(param)], expected), name


def test_in1k_forward():
    model = build(load(CLS['l1'])).eval()
    with torch.no_grad():
        logits = model(torch.rand(2, 3, 224, 224), mode='tensor')
    assert logits.shape == (2, 1000)
