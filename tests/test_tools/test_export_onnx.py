"""fcaformer_mm.utils.onnx_export, behind tools/deployment/export_onnx.py
(onnx and onnxruntime needed)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from fcaformer_mm.models.backbones.fcaformer import FcaFormer
from fcaformer_mm.utils.model_builder import TensorForward

pytest.importorskip('onnx')
pytest.importorskip('onnxruntime')

ROOT = Path(__file__).parents[2]
CONFIG = ROOT / 'configs' / 'upernet_fcaformer_l2_ade20k.py'
TINY = dict(embed_dims=[16, 32, 32, 48], depths=[1, 2, 3, 2], num_heads=[2, 3])


@pytest.fixture(scope='module')
def tool():
    from fcaformer_mm.utils import onnx_export
    return onnx_export


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_model(deploy: bool = False) -> FcaFormer:
    torch.manual_seed(0)
    model = FcaFormer(TINY)
    with torch.no_grad():
        # Non-trivial statistics and biases, so that all of them matter.
        for name, tensor in model.state_dict().items():
            if 'running_var' in name:
                tensor.uniform_(0.5, 1.5)
            elif 'running_mean' in name or name.endswith(
                    ('bias', 'gamma_1', 'gamma_2', 'gamma', 'biases')):
                tensor.normal_(0, 0.3)
    model.eval()
    if deploy:
        model.switch_to_deploy()
    return model


@pytest.mark.parametrize('size', [(1, 1), (2, 2), (3, 3), (6, 6), (2, 5),
                                  (1, 4)])
@pytest.mark.parametrize('shape', [(13, 13), (16, 24), (7, 31), (6, 6)])
def test_sliced_pool_equals_adaptive_pool(tool, size, shape):
    x = torch.randn(2, 5, *shape)
    expected = nn.AdaptiveAvgPool2d(size)(x)
    got = tool.SlicedAdaptiveAvgPool2d(size)(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_make_exportable_swaps_every_adaptive_pool(tool):
    model = nn.Sequential(
        nn.AdaptiveAvgPool2d(3),
        nn.Sequential(nn.Conv2d(3, 3, 1), nn.AdaptiveAvgPool2d((2, 1))))
    assert tool.make_exportable(model) == 2
    assert not any(
        isinstance(m, nn.AdaptiveAvgPool2d) for m in model.modules())


@pytest.mark.parametrize('deploy', [False, True])
def test_backbone_dynamic_sizes(tool, tmp_path, deploy):
    model = tiny_model(deploy)
    module = TensorForward(model, None).eval()
    path = str(tmp_path / 'tiny.onnx')
    # 224x224 fills whole windows in stages 2 and 3: the trace must still
    # hold the padding that other sizes need.
    names = tool.export(module, path, (224, 224), opset=17)
    assert names == ['out0', 'out1', 'out2', 'out3']
    checks = tool.verify(module, path, [(1, 3, 224, 224), (2, 3, 61, 97),
                                        (1, 3, 130, 64)])
    for check in checks:
        assert check['shapes_match'], check
        assert check['max_abs_diff'] <= 1e-4, check
    assert checks[1]['output_shapes'][0] == [2, 16, 16, 25]


def test_cli_backbone_json(tool, tmp_path):
    out = tmp_path / 'l1.onnx'
    report = tmp_path / 'report.json'
    status = tool.main([
        '--arch', 'l1', '--out', str(out), '--shape', '64', '64', '--verify',
        '--verify-shapes', '1x64x64', '1x45x70', '--json', str(report),
        '--deploy'
    ])
    assert status == 0
    result = json.loads(report.read_text())
    assert result['passed'] and result['kind'] == 'backbone'
    assert result['deploy'] is True
    assert [c['input_shape'] for c in result['checks']] == [[1, 3, 64, 64],
                                                          [1, 3, 45, 70]]
    assert all(c['max_abs_diff'] <= 1e-3 for c in result['checks'])


def test_upernet_segmentor_dynamic_sizes(tool, tmp_path):
    pytest.importorskip('mmseg')
    out = tmp_path / 'upernet.onnx'
    report = tmp_path / 'report.json'
    status = tool.main([
        str(CONFIG), '--out', str(out), '--shape', '64', '64', '--verify',
        '--verify-shapes', '1x64x64', '2x77x50', '--json', str(report)
    ])
    result = json.loads(report.read_text())
    assert status == 0, result
    assert result['kind'] == 'segmentor'
    assert result['outputs'] == ['seg_logits']
    assert result['sliced_adaptive_pools'] == 4  # UPerHead: 1, 2, 3, 6
    shapes = [c['output_shapes'][0] for c in result['checks']]
    assert shapes == [[1, 150, 16, 16], [2, 150, 20, 13]]
    assert all(c['max_abs_diff'] <= 1e-3 for c in result['checks'])


def test_backbone_only_of_a_config(tool, tmp_path):
    out = tmp_path / 'backbone.onnx'
    report = tmp_path / 'report.json'
    status = tool.main([
        str(CONFIG), '--backbone-only', '--out', str(out), '--shape', '64',
        '64', '--verify', '--verify-shapes', '1x50x70', '--json',
        str(report)
    ])
    result = json.loads(report.read_text())
    assert status == 0 and result['kind'] == 'backbone'
    assert result['checks'][0]['output_shapes'][3] == [1, 768, 2, 3]


def _args(tool, *argv):
    return tool.parse_args(['--out', 'unused.onnx', *map(str, argv)])


def test_checkpoint_payload_is_refused(tool, payload):
    url, path, marker = payload
    for source in (url, path):
        with pytest.raises(SystemExit,
                           match=r'UnsafeCheckpointError.*`posix\.system`'):
            tool.main(['--arch', 'l1', '--checkpoint', str(source), '--out',
                       str(path.parent / 'never.onnx')])
    assert not marker.exists()
    assert not (path.parent / 'never.onnx').exists()


def test_checkpoint_must_fit(tool, tmp_path):
    """The weights of another model, or with weights missing, are not
    exported unless --allow-partial; fitting ones load."""
    torch.manual_seed(1)
    dense = FcaFormer('l1')
    whole = tmp_path / 'segmentor.pth'
    torch.save({'state_dict': {f'backbone.{k}': v
                               for k, v in dense.state_dict().items()}},
               whole)
    module, _ = tool.build(_args(tool, '--arch', 'l1', '--checkpoint', whole))
    torch.testing.assert_close(module.model.state_dict(), dense.state_dict())

    # An official classifier checkpoint: no output heads for the dense model.
    classifier = tmp_path / 'classifier.pth'
    torch.save({'model': FcaFormer('l1', out_type='avg_featmap').state_dict(),
                'epoch': 299}, classifier)
    with pytest.raises(SystemExit) as info:
        tool.main(['--arch', 'l1', '--checkpoint', str(classifier), '--out',
                   str(tmp_path / 'x.onnx')])
    message = str(info.value.code)
    assert 'does not fit FcaFormer' in message
    assert 'head0.weight' in message and 'norm_head.weight' in message
    assert '--allow-partial' in message
    assert not (tmp_path / 'x.onnx').exists()
    module, _ = tool.build(_args(tool, '--arch', 'l1', '--checkpoint',
                                 classifier, '--allow-partial'))

    with pytest.raises(SystemExit, match='another shape'):
        tool.main(['--arch', 'l2', '--checkpoint', str(whole), '--out',
                   str(tmp_path / 'x.onnx')])


@pytest.mark.parametrize('shape', [['0', '64'], ['-8', '64']])
def test_bad_shape_is_an_argument_error(tool, shape, capsys):
    with pytest.raises(SystemExit) as info:
        tool.parse_args(['--out', 'x.onnx', '--shape'] + shape)
    assert info.value.code == 2
    assert 'is not a size' in capsys.readouterr().err


def test_outputs_never_replace_inputs(tool, tmp_path):
    """``--out`` or ``--json`` naming the checkpoint or the config (by any
    path to it) is refused before anything is built or written."""
    ckpt = tmp_path / 'weights.pth'
    torch.save({'state_dict': {}}, ckpt)
    original = ckpt.read_bytes()
    (tmp_path / 'link').symlink_to(tmp_path)
    with pytest.raises(SystemExit,
                       match=r'--out \S+ is the same file as --checkpoint'):
        tool.main(['--arch', 'l1', '--checkpoint', str(ckpt), '--out',
                   str(tmp_path / 'link' / 'weights.pth')])
    assert ckpt.read_bytes() == original
    config_text = CONFIG.read_text()
    with pytest.raises(SystemExit,
                       match=r'--json \S+ is the same file as the config'):
        tool.main([str(CONFIG), '--out', str(tmp_path / 'x.onnx'),
                   '--json', str(CONFIG)])
    with pytest.raises(SystemExit, match=r'--json \S+ is the same file as '
                       '--out'):
        tool.main(['--out', str(tmp_path / 'x.onnx'), '--json',
                   str(tmp_path / 'link' / 'x.onnx')])
    assert CONFIG.read_text() == config_text
    assert not (tmp_path / 'x.onnx').exists()
