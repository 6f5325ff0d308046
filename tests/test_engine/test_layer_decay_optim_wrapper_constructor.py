"""Tests of FcaFormer's layer-wise learning-rate decay constructor."""
from __future__ import annotations

import importlib
import logging
import re
import warnings

import pytest
import torch
from mmengine.logging import MMLogger
from mmengine.optim import AmpOptimWrapper, OptimWrapper, build_optim_wrapper
from mmengine.registry import DefaultScope
from torch import nn

from fcaformer_mm.engine.optimizers import (
    FcaFormerLayerDecayOptimWrapperConstructor,
)
from fcaformer_mm.engine.optimizers import (
    layer_decay_optim_wrapper_constructor as ld_module,
)

DECAY_TYPES = ld_module.DECAY_TYPES
CONSTRUCTOR = 'FcaFormerLayerDecayOptimWrapperConstructor'
BASE_LR = 1e-4
BASE_WD = 0.05
RATE = 0.9
NUM_LAYERS = 6


def _dense_fcaformer_names() -> dict[str, tuple[int, ...]]:
    """Names and shapes of a tiny dense FcaFormer, as in the official code.

    Depths (2, 2, 7, 2) as L2, so stage 2 has block ids 0..6; the last block
    of a stage has no ``dw_conv``, the first none of the cross-token
    parameters.
    """
    dims = (4, 8, 12, 16)
    heads = (2, 3)
    shapes: dict[str, tuple[int, ...]] = {}

    def conv_bn(prefix: str, cin: int, cout: int, k: int) -> None:
        shapes[f'{prefix}.c.weight'] = (cout, cin, k, k)
        for key in ('weight', 'bias'):
            shapes[f'{prefix}.bn.{key}'] = (cout, )

    conv_bn('backbone.patch_embed.seq.0', 3, dims[0] // 2, 3)
    conv_bn('backbone.patch_embed.seq.2', dims[0] // 2, dims[0], 3)
    for stage, depth in enumerate((2, 2, 7, 2)):
        dim = dims[stage]
        for j in range(depth):
            p = f'backbone.layer_{stage}.blocks.{j}'
            if stage < 2:
                shapes.update({
                    f'{p}.dwconv.weight': (dim, 1, 7, 7),
                    f'{p}.dwconv.bias': (dim, ),
                    f'{p}.norm.weight': (dim, ),
                    f'{p}.norm.bias': (dim, ),
                    f'{p}.pwconv1.weight': (4 * dim, dim),
                    f'{p}.pwconv1.bias': (4 * dim, ),
                    f'{p}.pwconv2.weight': (dim, 4 * dim),
                    f'{p}.pwconv2.bias': (dim, ),
                    f'{p}.gamma': (dim, ),
                })
                continue
            nh = heads[stage - 2]
            shapes.update({
                f'{p}.gamma_1': (dim, ),
                f'{p}.gamma_2': (dim, ),
            })
            if j < depth - 1:
                shapes[f'{p}.dw_conv.weight'] = (dim, 1, 7, 7)
            if j > 0:
                shapes.update({
                    f'{p}.s_token_bias': (1, nh, 1, 4 * j),
                    f'{p}.s_norm.weight': (dim, ),
                    f'{p}.s_norm.bias': (dim, ),
                    f'{p}.s_scale_factors': (1, 4 * j, 1),
                })
            shapes.update({
                f'{p}.norm1.weight': (dim, ),
                f'{p}.norm1.bias': (dim, ),
                f'{p}.attention_biases': (nh, 10),
                f'{p}.qkv.weight': (3 * dim, dim),
                f'{p}.qkv.bias': (3 * dim, ),
                f'{p}.proj.weight': (dim, dim),
                f'{p}.proj.bias': (dim, ),
                f'{p}.norm2.weight': (dim, ),
                f'{p}.norm2.bias': (dim, ),
                f'{p}.mlp.norm.weight': (dim, ),
                f'{p}.mlp.norm.bias': (dim, ),
                f'{p}.mlp.fc1.weight': (4 * dim, dim),
                f'{p}.mlp.fc1.bias': (4 * dim, ),
                f'{p}.mlp.fc2.weight': (dim, 4 * dim),
                f'{p}.mlp.fc2.bias': (dim, ),
            })
            conv_bn(f'{p}.local_conv', 1, dim, 3)
        if stage < 3:
            p = f'backbone.layer_{stage}.downsample'
            nxt = dims[stage + 1]
            conv_bn(f'{p}.conv1', dim, nxt, 1)
            conv_bn(f'{p}.conv2', 1, nxt, 3)
            conv_bn(f'{p}.conv3', nxt, nxt, 1)
    for i, dim in enumerate(dims):
        shapes[f'backbone.head{i}.weight'] = (dim, dim, 1, 1)
        shapes[f'backbone.norm{i}.weight'] = (dim, )
        shapes[f'backbone.norm{i}.bias'] = (dim, )
    return shapes


def _host_names() -> dict[str, tuple[int, ...]]:
    """Names of the neck and heads of an mmseg or mmdet host model."""
    return {
        'neck.lateral_convs.0.conv.weight': (8, 4, 1, 1),
        'neck.lateral_convs.0.conv.bias': (8, ),
        'decode_head.bottleneck.conv.weight': (8, 8, 3, 3),
        'decode_head.bottleneck.bn.weight': (8, ),
        'decode_head.bottleneck.bn.bias': (8, ),
        'decode_head.conv_seg.weight': (5, 8, 1, 1),
        'decode_head.conv_seg.bias': (5, ),
        'auxiliary_head.conv_seg.weight': (5, 8, 1, 1),
        'auxiliary_head.conv_seg.bias': (5, ),
    }


def build_model(shapes: dict[str, tuple[int, ...]]) -> nn.Module:
    """A module tree whose ``named_parameters`` are exactly ``shapes``."""
    model = nn.Module()
    for name, shape in shapes.items():
        *path, leaf = name.split('.')
        module = model
        for part in path:
            if not hasattr(module, part):
                module.add_module(part, nn.Module())
            module = getattr(module, part)
        module.register_parameter(leaf, nn.Parameter(torch.zeros(shape)))
    return model


def fake_segmentor() -> nn.Module:
    return build_model({**_dense_fcaformer_names(), **_host_names()})


def make_cfg(decay_type: str = 'stage_wise',
             wrapper: str = 'OptimWrapper',
             **paramwise) -> dict:
    paramwise = {
        'decay_rate': RATE,
        'decay_type': decay_type,
        'num_layers': NUM_LAYERS,
        **paramwise,
    }
    return {
        'type': wrapper,
        'optimizer': {
            'type': 'AdamW',
            'lr': BASE_LR,
            'betas': (0.9, 0.999),
            'weight_decay': BASE_WD,
        },
        # scoped, so it resolves from any default scope
        'constructor': f'fcaformer_mm.{CONSTRUCTOR}',
        'paramwise_cfg': {k: v for k, v in paramwise.items() if v is not None},
    }


def build(model: nn.Module,
          cfg: dict,
          scope: str = 'mmengine') -> OptimWrapper:
    """Build through mmengine's entry point, as the Runner does."""
    with DefaultScope.overwrite_default_scope(scope):
        return build_optim_wrapper(model, cfg)


def groups_by_name(optim_wrapper: OptimWrapper) -> dict[str, dict]:
    """Map every parameter name to the param group that holds it."""
    found = {}
    for group in optim_wrapper.optimizer.param_groups:
        for name in group['param_names']:
            assert name not in found, f'{name} in two groups'
            found[name] = group
    return found


#: name -> (stage_wise id, layer_wise_cab id, decayed under the
#: segmentation rule, decayed under the detection rule), num_layers 6.
EXPECTED = {
    'backbone.patch_embed.seq.0.c.weight': (0, 0, True, True),
    'backbone.patch_embed.seq.0.bn.weight': (0, 0, False, False),
    'backbone.patch_embed.seq.2.bn.bias': (0, 0, False, False),
    'backbone.layer_0.blocks.0.dwconv.weight': (1, 1, True, True),
    'backbone.layer_0.blocks.0.dwconv.bias': (1, 1, False, False),
    'backbone.layer_0.blocks.1.gamma': (1, 1, False, False),
    'backbone.layer_0.blocks.1.pwconv2.weight': (1, 1, True, True),
    'backbone.layer_0.downsample.conv1.c.weight': (0, 0, True, True),
    'backbone.layer_0.downsample.conv2.bn.bias': (0, 0, False, False),
    'backbone.layer_1.blocks.0.norm.weight': (2, 2, False, False),
    'backbone.layer_1.blocks.1.pwconv1.weight': (2, 2, True, True),
    'backbone.layer_1.downsample.conv3.c.weight': (0, 2, True, True),
    'backbone.layer_2.blocks.0.qkv.weight': (3, 3, True, True),
    'backbone.layer_2.blocks.0.dw_conv.weight': (3, 3, True, True),
    'backbone.layer_2.blocks.2.proj.weight': (3, 3, True, True),
    'backbone.layer_2.blocks.3.qkv.weight': (3, 4, True, True),
    'backbone.layer_2.blocks.5.qkv.bias': (3, 4, False, False),
    'backbone.layer_2.blocks.5.local_conv.c.weight': (3, 4, True, True),
    'backbone.layer_2.blocks.6.mlp.fc1.weight': (3, 5, True, True),
    'backbone.layer_2.blocks.6.mlp.norm.weight': (3, 5, False, False),
    'backbone.layer_2.blocks.4.attention_biases': (3, 4, False, True),
    'backbone.layer_2.blocks.1.s_scale_factors': (0, 0, True, True),
    'backbone.layer_2.blocks.6.s_token_bias': (0, 0, False, True),
    'backbone.layer_2.blocks.1.s_norm.weight': (3, 3, False, False),
    'backbone.layer_2.blocks.0.gamma_1': (3, 3, False, False),
    'backbone.layer_2.downsample.conv1.c.weight': (0, 3, True, True),
    'backbone.layer_2.downsample.conv2.bn.weight': (0, 3, False, False),
    'backbone.layer_3.blocks.0.qkv.weight': (4, 6, True, True),
    'backbone.layer_3.blocks.1.attention_biases': (4, 6, False, True),
    'backbone.layer_3.blocks.1.s_token_bias': (0, 0, False, True),
    'backbone.layer_3.blocks.1.mlp.fc2.bias': (4, 6, False, False),
    'backbone.head2.weight': (7, 7, True, True),
    'backbone.norm2.weight': (7, 7, False, False),
    'neck.lateral_convs.0.conv.weight': (7, 7, True, True),
    'decode_head.conv_seg.weight': (7, 7, True, True),
    'decode_head.conv_seg.bias': (7, 7, False, False),
    'decode_head.bottleneck.bn.weight': (7, 7, False, False),
    'auxiliary_head.conv_seg.weight': (7, 7, True, True),
}


@pytest.mark.parametrize(('decay_type', 'column', 'rule'),
                         [('stage_wise', 0, 'segmentation'),
                          ('layer_wise_cab', 1, 'detection'),
                          ('stage_wise', 0, 'detection'),
                          ('layer_wise_cab', 1, 'segmentation')])
def test_known_names(decay_type: str, column: int, rule: str) -> None:
    model = fake_segmentor()
    default_rule = rule == ld_module.DEFAULT_NO_DECAY_RULES[decay_type]
    cfg = make_cfg(decay_type, no_decay_rule=None if default_rule else rule)
    optim_wrapper = build(model, cfg)
    assert type(optim_wrapper) is OptimWrapper
    assert isinstance(optim_wrapper.optimizer, torch.optim.AdamW)
    found = groups_by_name(optim_wrapper)
    decay_column = 2 if rule == 'segmentation' else 3
    for name, row in EXPECTED.items():
        layer_id, decayed = row[column], row[decay_column]
        group = found[name]
        scale = RATE**(NUM_LAYERS + 2 - layer_id - 1)
        suffix = 'decay' if decayed else 'no_decay'
        assert group['group_name'] == f'layer_{layer_id}_{suffix}', name
        assert group['layer_id'] == layer_id, name
        assert group['lr_scale'] == pytest.approx(scale), name
        assert group['lr'] == pytest.approx(BASE_LR * scale), name
        assert group['weight_decay'] == (BASE_WD if decayed else 0.), name


def test_every_param_in_one_group() -> None:
    model = fake_segmentor()
    optim_wrapper = build(model, make_cfg('layer_wise_cab'))
    groups = optim_wrapper.optimizer.param_groups
    names = dict(model.named_parameters())
    assert sorted(groups_by_name(optim_wrapper)) == sorted(names)
    for group in groups:
        assert group['params'] == [names[n] for n in group['param_names']]
        assert group['group_name'] == (
            f'layer_{group["layer_id"]}_'
            f'{"no_decay" if group["weight_decay"] == 0 else "decay"}')
    assert len({g['group_name'] for g in groups}) == len(groups)
    # ids 0..7 under layer_wise_cab with num_layers 6, each with both kinds.
    assert {g['layer_id'] for g in groups} == set(range(8))
    assert len(groups) == 16


def test_layer_ids_against_rule_functions() -> None:
    for name, row in EXPECTED.items():
        assert ld_module.get_layer_id_stage_wise(name, NUM_LAYERS) == row[0]
        assert ld_module.get_layer_id_layer_wise_cab(name,
                                                     NUM_LAYERS) == row[1]
    # the ids follow num_layers where the rule says so
    assert ld_module.get_layer_id_stage_wise('decode_head.x.weight', 4) == 5
    assert ld_module.get_layer_id_layer_wise_cab(
        'backbone.layer_3.blocks.0.qkv.weight', 4) == 4
    assert ld_module.get_layer_id_layer_wise_cab(
        'backbone.layer_3.downsample.conv1.c.weight', 6) == 6


@pytest.mark.parametrize('name', [
    'backbone.layer_2.extra.weight',
    'backbone.layer_x.blocks.0.weight',
])
def test_unknown_stage_names_raise(name: str) -> None:
    for func in (ld_module.get_layer_id_stage_wise,
                 ld_module.get_layer_id_layer_wise_cab):
        with pytest.raises(ValueError, match='Cannot assign a layer id'):
            func(name, NUM_LAYERS)
    with pytest.raises(ValueError, match='stages 0 to 3'):
        ld_module.get_layer_id_layer_wise_cab(
            'backbone.layer_4.blocks.0.qkv.weight', NUM_LAYERS)


def test_frozen_params_left_out() -> None:
    model = fake_segmentor()
    frozen = {
        'backbone.patch_embed.seq.0.c.weight',
        'backbone.layer_2.blocks.3.qkv.weight',
        'decode_head.conv_seg.bias',
    }
    for name, param in model.named_parameters():
        if name in frozen:
            param.requires_grad_(False)
    optim_wrapper = build(model, make_cfg())
    found = groups_by_name(optim_wrapper)
    assert frozen.isdisjoint(found)
    assert len(found) == len(list(model.parameters())) - len(frozen)
    # and the others are unchanged
    assert found['backbone.layer_2.blocks.3.qkv.bias']['layer_id'] == 3


def test_official_key_alias() -> None:
    cfg = make_cfg('stage_wise', decay_rate=None, layer_decay_rate=RATE)
    assert 'decay_rate' not in cfg['paramwise_cfg']
    alias = groups_by_name(build(fake_segmentor(), cfg))
    plain = groups_by_name(build(fake_segmentor(), make_cfg('stage_wise')))
    assert alias.keys() == plain.keys()
    for name, group in alias.items():
        assert group['lr'] == plain[name]['lr']
        assert group['weight_decay'] == plain[name]['weight_decay']
    # both keys: fine when equal, an error when not
    build(fake_segmentor(), make_cfg(layer_decay_rate=RATE))
    with pytest.raises(ValueError, match='different values'):
        build(fake_segmentor(), make_cfg(layer_decay_rate=0.5))


def test_official_config_translates() -> None:
    """The official Mask R-CNN ``paramwise_cfg`` as it stands."""
    official = {
        'decay_rate': 0.95,
        'decay_type': 'layer_wise_cab',
        'num_layers': 6
    }
    cfg = make_cfg()
    cfg['paramwise_cfg'] = dict(official)
    found = groups_by_name(build(fake_segmentor(), cfg))
    group = found['backbone.layer_2.blocks.6.qkv.weight']
    assert group['lr'] == pytest.approx(BASE_LR * 0.95**2)


def test_bad_paramwise_cfg() -> None:
    model = fake_segmentor()
    valid = re.escape("('stage_wise', 'layer_wise_cab')")
    for bad in ('layer_wise', 'Stage_wise', None):
        cfg = make_cfg()
        cfg['paramwise_cfg']['decay_type'] = bad
        with pytest.raises(ValueError, match=valid):
            build(model, cfg)
    cfg = make_cfg(num_layers=None)
    with pytest.raises(ValueError, match=r'"num_layers"\] is required'):
        build(model, cfg)
    with pytest.raises(ValueError, match='num_layers'):
        FcaFormerLayerDecayOptimWrapperConstructor(
            {'optimizer': {'type': 'AdamW', 'lr': 1e-4}})
    with pytest.raises(TypeError, match='must be an int'):
        build(model, make_cfg(num_layers='6'))
    with pytest.raises(ValueError, match='must be positive'):
        build(model, make_cfg(num_layers=0))
    with pytest.raises(ValueError, match='is required'):
        build(model, make_cfg(decay_rate=None))
    with pytest.raises(ValueError, match='no_decay_rule'):
        build(model, make_cfg(no_decay_rule='classification'))
    with pytest.raises(ValueError, match='custom_keys'):
        build(model, make_cfg(custom_keys={'backbone': {'lr_mult': 0.1}}))
    cfg = make_cfg()
    del cfg['optimizer']['lr']
    with pytest.raises(TypeError, match='"lr"'):
        build(model, cfg)


def test_caller_cfg_not_edited() -> None:
    cfg = make_cfg(layer_decay_rate=RATE)
    before = repr(cfg)
    build(fake_segmentor(), cfg)
    assert repr(cfg) == before


def test_no_weight_decay_in_optimizer_cfg() -> None:
    cfg = make_cfg()
    del cfg['optimizer']['weight_decay']
    optim_wrapper = build(fake_segmentor(), cfg)
    found = groups_by_name(optim_wrapper)
    # the decay groups take AdamW's own default, the others 0
    adamw_default = torch.optim.AdamW([nn.Parameter(torch.zeros(1))
                                       ]).defaults['weight_decay']
    assert found['backbone.layer_2.blocks.3.qkv.weight'][
        'weight_decay'] == adamw_default
    assert found['backbone.layer_2.blocks.3.qkv.bias']['weight_decay'] == 0.


def test_optimizer_steps() -> None:
    model = fake_segmentor()
    optim_wrapper = build(model, make_cfg())
    loss = sum((p * p).sum() + p.sum() for p in model.parameters())
    optim_wrapper.update_params(loss)
    assert all(p.abs().sum() > 0 for p in model.parameters())


class _Records(logging.Handler):

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def log_records():
    logger = MMLogger.get_current_instance()
    handler = _Records()
    level = logger.level
    logger.addHandler(handler)
    yield handler.records
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_groups_logged_once(log_records: list) -> None:
    build(fake_segmentor(), make_cfg())
    infos = [r for r in log_records if r.levelno == logging.INFO]
    tables = [r for r in infos if 'layer-wise lr decay' in r.getMessage()]
    assert len(tables) == 1
    table = tables[0].getMessage()
    assert 'decay_type=stage_wise' in table
    assert re.search(r'layer id\s+lr scale\s+lr\s+weight decay\s+tensors'
                     r'\s+elements', table)
    n_tensors = len(list(fake_segmentor().parameters()))
    n_elements = sum(p.numel() for p in fake_segmentor().parameters())
    assert re.search(rf'^total\s+{n_tensors}\s+{n_elements}$', table,
                     re.MULTILINE)
    # 6 layer ids (0 to 4 and 7) x (decay, no_decay), a title, a header
    # and a total
    assert len(table.splitlines()) == 12 + 3
    # parameter names are not dumped at INFO level
    assert all('qkv' not in r.getMessage() for r in infos)
    assert not [r for r in log_records if r.levelno >= logging.WARNING]


def test_warnings(log_records: list) -> None:
    # a model without FcaFormer names: everything keeps the base lr
    model = build_model(_host_names())
    build(model, make_cfg())
    warnings = [r for r in log_records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert 'no parameter matched' in warnings[0].getMessage()
    # num_layers too small for layer_wise_cab: scales above 1
    log_records.clear()
    build(fake_segmentor(), make_cfg('layer_wise_cab', num_layers=2))
    warnings = [r for r in log_records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert 'above 1' in warnings[0].getMessage()


def test_amp_optim_wrapper_passed_through(monkeypatch) -> None:
    cfg = make_cfg(wrapper='AmpOptimWrapper')
    if not torch.cuda.is_available():
        # AmpOptimWrapper's own device check is what stops it here.
        with pytest.raises(AssertionError, match='AmpOptimizerWrapper'):
            build(fake_segmentor(), cfg)
        amp_module = importlib.import_module(AmpOptimWrapper.__module__)
        monkeypatch.setattr(amp_module, 'is_cuda_available', lambda: True)
    with warnings.catch_warnings():
        # GradScaler's deprecation and no-CUDA notes
        warnings.simplefilter('ignore')
        optim_wrapper = build(fake_segmentor(), cfg)
    assert type(optim_wrapper) is AmpOptimWrapper
    found = groups_by_name(optim_wrapper)
    group = found['backbone.layer_2.blocks.3.qkv.weight']
    assert group['lr'] == pytest.approx(BASE_LR * RATE**4)


def test_ddp_like_wrapper_unwrapped() -> None:
    """``__call__`` names parameters from the model inside ``.module``."""
    wrapped = nn.Module()
    wrapped.module = fake_segmentor()
    found = groups_by_name(build(wrapped, make_cfg()))
    assert 'backbone.layer_2.blocks.3.qkv.weight' in found


def test_registered_in_fcaformer_scope() -> None:
    from fcaformer_mm.registry import OPTIM_WRAPPER_CONSTRUCTORS
    assert OPTIM_WRAPPER_CONSTRUCTORS.get(
        CONSTRUCTOR) is FcaFormerLayerDecayOptimWrapperConstructor
    cfg = make_cfg()
    cfg['constructor'] = CONSTRUCTOR
    optim_wrapper = build(fake_segmentor(), cfg, scope='fcaformer_mm')
    assert len(optim_wrapper.optimizer.param_groups) == 12


@pytest.fixture(scope='module')
def real_segmentor() -> nn.Module:
    """The real dense FcaFormer-L2 under ``backbone``, with a head."""
    from fcaformer_mm.models.backbones import FcaFormer
    model = nn.Module()
    model.backbone = FcaFormer(arch='l2')
    model.decode_head = nn.Module()
    model.decode_head.conv_seg = nn.Conv2d(96, 150, 1)
    return model


@pytest.mark.parametrize('decay_type', DECAY_TYPES)
def test_real_fcaformer_l2(real_segmentor: nn.Module, decay_type: str,
                           log_records: list) -> None:
    model = real_segmentor
    optim_wrapper = build(model, make_cfg(decay_type))
    groups = optim_wrapper.optimizer.param_groups
    params = dict(model.named_parameters())
    # every parameter in exactly one group, and the counts add up
    assert sorted(groups_by_name(optim_wrapper)) == sorted(params)
    assert sum(len(g['params']) for g in groups) == len(params)
    n_elements = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for g in groups
               for p in g['params']) == n_elements
    backbone = model.backbone
    assert sum(p.numel() for p in backbone.parameters()) == 16_334_390
    ids = {g['layer_id'] for g in groups}
    if decay_type == 'stage_wise':
        assert ids == {0, 1, 2, 3, 4, 7}
    else:
        # the 7 blocks of stage 2 take ids 3, 4 and 5
        assert ids == set(range(8))
        # the backbone's own layer_wise_cab ids (for mmpretrain's
        # constructor) agree with the constructor's for L2
        assert backbone.num_decay_layers == NUM_LAYERS
        for name in params:
            assert groups_by_name(optim_wrapper)[name]['layer_id'] == \
                backbone.get_layer_depth(name, 'backbone.')[0], name
    found = groups_by_name(optim_wrapper)
    cross = [n for n in params if 's_scale_factors' in n
             or 's_token_bias' in n]
    assert len(cross) == 2 * (6 + 1)
    assert all(found[n]['layer_id'] == 0 for n in cross)
    table = [r.getMessage() for r in log_records
             if 'layer-wise lr decay' in r.getMessage()]
    assert len(table) == 1
    assert re.search(rf'^total\s+{len(params)}\s+{n_elements}$', table[0],
                     re.MULTILINE)


def test_real_fcaformer_frozen_stages() -> None:
    from fcaformer_mm.models.backbones import FcaFormer
    model = nn.Module()
    model.backbone = FcaFormer(arch='l1', frozen_stages=1)
    found = groups_by_name(build(model, make_cfg('layer_wise_cab')))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(found) == trainable
    assert not any(n.startswith(('backbone.patch_embed',
                                 'backbone.layer_0.', 'backbone.layer_1.b'))
                   for n in found)
    assert found['backbone.layer_1.downsample.conv1.c.weight'][
        'layer_id'] == 2


def _import_host(host: str):
    """Import a host codebase's registry, or skip with the reason."""
    try:
        return importlib.import_module(f'{host}.registry')
    except Exception as err:  # noqa: BLE001 (any failure means unusable)
        pytest.skip(f'host codebase {host} is not importable here '
                    f'({type(err).__name__}: {err}); its default-scope '
                    'test needs the full stack')


@pytest.mark.parametrize('host', ['mmseg', 'mmdet', 'mmpretrain'])
@pytest.mark.parametrize('wrapper', ['OptimWrapper', 'AmpOptimWrapper'])
def test_host_default_scope(host: str, wrapper: str, monkeypatch) -> None:
    """Optimizer and wrapper resolve in the host's default scope."""
    _import_host(host)
    if wrapper == 'AmpOptimWrapper' and not torch.cuda.is_available():
        cfg = make_cfg(wrapper=wrapper)
        with pytest.raises(AssertionError, match='AmpOptimizerWrapper'):
            build(fake_segmentor(), cfg, scope=host)
        amp_module = importlib.import_module(AmpOptimWrapper.__module__)
        monkeypatch.setattr(amp_module, 'is_cuda_available', lambda: True)
    for constructor in (f'fcaformer_mm.{CONSTRUCTOR}', CONSTRUCTOR):
        # the bare name needs the registration in the host's registries
        cfg = make_cfg(wrapper=wrapper)
        cfg['constructor'] = constructor
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            optim_wrapper = build(fake_segmentor(), cfg, scope=host)
        assert type(optim_wrapper).__name__ == wrapper
        assert isinstance(optim_wrapper.optimizer, torch.optim.AdamW)
        group = groups_by_name(optim_wrapper)[
            'backbone.layer_2.blocks.3.qkv.weight']
        assert group['lr'] == pytest.approx(BASE_LR * RATE**4)
        assert group['weight_decay'] == BASE_WD
