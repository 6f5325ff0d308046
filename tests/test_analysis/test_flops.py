"""fcaformer_mm.analysis.flops (``tools/analysis_tools/get_flops.py``) on
small inputs."""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch import nn

from fcaformer_mm.analysis import flops as get_flops

ROOT = Path(__file__).parents[2]
CONFIGS = ROOT / 'configs'



def plain_conv_net() -> nn.Module:
    """Convolutions and a linear layer: what both counters count alike."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=2, bias=False),
        nn.Flatten(),
        nn.Linear(16 * 8 * 8, 10),
    ).eval()


def test_plain_conv_net_counts_agree():
    model = plain_conv_net()
    x = torch.randn(1, 3, 16, 16)
    expected = (16 * 16 * 8 * 3 * 9 + 8 * 8 * 16 * (8 // 2) * 9 +
                16 * 8 * 8 * 10)
    assert get_flops.count_nn_macs(model, lambda: model(x)) == expected
    for counter in ('mmengine', 'torch'):
        macs, name, by_op = get_flops.count_full_macs(
            model, lambda m, t: m(t), x, counter)
        assert macs == expected, name
        assert name == get_flops.FULL_COUNTER_NAMES[counter]


def test_nn_counter_follows_mmcv_1x_rules():
    """Exact types only; bias adds for convs, none for linear layers; norms
    one or two per element; GELU and functional ops count nothing."""

    class LayerNorm2d(nn.LayerNorm):  # a subclass: not counted

        def forward(self, x):
            return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    class Net(nn.Module):

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 1)
            self.bn = nn.BatchNorm2d(4)
            self.sync_bn = nn.SyncBatchNorm(4)
            self.ln2d = LayerNorm2d(4)
            self.ln = nn.LayerNorm(4, elementwise_affine=False)
            self.relu = nn.ReLU()
            self.gelu = nn.GELU()
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            x = self.gelu(self.relu(self.bn(self.conv(x))))
            x = self.ln2d(self.sync_bn(x))
            x = x @ x.transpose(-1, -2)  # functional: not counted
            tokens = self.ln(self.pool(x).flatten(1))
            return self.fc(tokens)

    model = Net().eval()
    x = torch.randn(1, 4, 5, 5)
    by_type = Counter()
    total = get_flops.count_nn_macs(model, lambda: model(x), by_type)
    n = 4 * 5 * 5
    assert by_type == Counter({
        'Conv2d': n * 4 + n,
        'BatchNorm2d': 2 * n,
        'ReLU': n,
        'AdaptiveAvgPool2d': n,
        'LayerNorm': 4,
        'Linear': 4 * 3,
    })
    assert total == sum(by_type.values())


@pytest.mark.parametrize('arch', ['l1', 'l2'])
def test_nn_counter_sees_every_fcaformer_layer(arch):
    """The nn counter sees every linear layer and convolution of FcaFormer
    (the cross tokens' projection through the FcaBlock rule):
    the same multiply-adds as torch's operator counter finds in them, at a
    size with padded windows."""
    from fcaformer_mm.models.backbones.fcaformer import FcaFormer
    model = FcaFormer(arch).eval()
    x = torch.randn(1, 3, 200, 264)
    by_type = Counter()
    get_flops.count_nn_macs(model, lambda: model(x), by_type)
    # mmcv adds one MAC per output element of a convolution's bias.
    bias_adds = sum(
        out.numel() for out in _conv_outputs_with_bias(model, x))
    nn_macs = (by_type['Linear'] + by_type['FcaBlock'] + by_type['Conv2d']
               - bias_adds)
    assert by_type['BatchNorm2d'] > 0 and by_type['FcaBlock'] > 0
    _, _, by_op = get_flops.count_full_macs(model, lambda m, t: m(t), x,
                                            'torch')
    assert nn_macs == (by_op['addmm'] + by_op['mm'] +
                       by_op['convolution'])
    # The attention products are in the full count only.
    assert sum(v for k, v in by_op.items()
               if k in get_flops.MATMUL_OPS) > 0


def _conv_outputs_with_bias(model, x):
    outputs = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: outputs.append(o))
        for m in model.modules()
        if isinstance(m, nn.Conv2d) and m.bias is not None
    ]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return outputs


def test_default_shapes():
    assert get_flops._input_shape(None, 'mmseg') == (512, 2048)
    assert get_flops._input_shape(None, 'mmdet') == (1280, 800)
    assert get_flops._input_shape(None, 'mmpretrain') == (224, 224)
    assert get_flops._input_shape([96], 'mmdet') == (96, 96)
    assert get_flops._input_shape([64, 128], 'mmseg') == (64, 128)


def _check_result(result: dict, model: nn.Module | None = None) -> None:
    assert result['nn_macs'] > 0
    # FcaFormer's attention products are matmuls outside nn modules: only
    # the full count sees them.
    assert result['matmul_macs'] > 0
    assert result['full_macs'] > result['nn_macs']
    if model is not None:
        assert result['params'] == sum(p.numel() for p in model.parameters())


def test_classifier(capsys, tmp_path):
    pytest.importorskip('mmpretrain')
    out = tmp_path / 'result.json'
    config = str(CONFIGS / 'fcaformer_l1_in1k.py')
    assert get_flops.main([config, '--shape', '64', '--json', str(out)]) == 0
    text = capsys.readouterr().out
    assert 'MACs, nn modules only:' in text and 'MACs, full:' in text
    assert get_flops.NN_COUNTER_NAME in text
    assert 'FlopAnalyzer' in text or 'FlopCounterMode' in text
    result = json.loads(out.read_text())
    assert result['scope'] == 'mmpretrain'
    assert result['input_shape'] == [1, 3, 64, 64]
    model, _ = get_flops.build_model(get_flops.Config.fromfile(config))
    _check_result(result, model)
    assert result['params'] == 6187560  # official L1 classifier


def test_segmentor():
    pytest.importorskip('mmseg')
    config = str(CONFIGS / 'upernet_fcaformer_l2_ade20k.py')
    result = get_flops.analyse(config, [64, 96])
    assert result['scope'] == 'mmseg'
    assert result['input_shape'] == [1, 3, 64, 96]
    _check_result(result)
    assert result['num_rois'] is None
    assert set(result['params_by_child']) >= {
        'backbone', 'decode_head', 'auxiliary_head'
    }


@pytest.mark.parametrize('config', [
    'mask_rcnn_fcaformer_l2_fpn_3x_coco.py',
    'cascade_mask_rcnn_fcaformer_l2_fpn_3x_coco.py'
])
def test_detector(config):
    pytest.importorskip('mmdet')
    result = get_flops.analyse(
        str(CONFIGS / config), [96, 128],
        {'model.test_cfg.rpn.max_per_img': 8})
    assert result['scope'] == 'mmdet'
    assert 0 < result['num_rois'] <= 8
    assert result['mask_rois'] == result['num_rois']
    _check_result(result)


def _mask_head_macs_per_roi() -> int:
    """nn-only MACs of mmdet's FCNMaskHead (4 convs, deconv, 80 classes)
    for one RoI."""
    convs = 4 * (256 * 256 * 9 * 14 * 14 + 256 * 14 * 14)  # with bias
    relus = 4 * 256 * 14 * 14 + 256 * 28 * 28
    deconv = 256 * 256 * 2 * 2 * 14 * 14 + 256 * 28 * 28
    logits = 256 * 80 * 28 * 28 + 80 * 28 * 28
    return convs + relus + deconv + logits


def test_cascade_mask_rois_capped():
    """mmdet 3.x runs the three cascade mask heads on every RoI; the tool
    caps them as mmdet 2.x's forward_dummy did."""
    pytest.importorskip('mmdet')
    config = str(CONFIGS / 'cascade_mask_rcnn_fcaformer_l2_fpn_3x_coco.py')
    options = {'model.test_cfg.rpn.max_per_img': 8}
    capped = get_flops.analyse(config, [96, 128], options, 'torch', 3)
    full = get_flops.analyse(config, [96, 128], options, 'torch', 0)
    num_rois = capped['num_rois']
    assert num_rois == full['num_rois'] > 3
    assert (capped['mask_rois'], full['mask_rois']) == (3, num_rois)
    assert full['nn_macs'] - capped['nn_macs'] == (
        3 * (num_rois - 3) * _mask_head_macs_per_roi())


@pytest.mark.parametrize('shape,expected', [
    (['0', '0'], '0 is not a size'),
    (['-1'], '-1 is not a size'),
    (['512', '-3'], '-3 is not a size'),
    (['1', '2', '3'], r'takes H W or one side .* got 3 values \(1 2 3\)'),
    (['big'], "'big' is not a whole number"),
])
def test_bad_shape_is_an_argument_error(shape, expected, capsys):
    """A usage error naming the problem, not a traceback from the model."""
    with pytest.raises(SystemExit) as info:
        get_flops.parse_args(['config.py', '--shape'] + shape)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert 'argument --shape' in err
    assert re.search(expected, err), err
    assert 'Traceback' not in err
