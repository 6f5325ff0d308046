"""The README's onnxruntime example on a real photograph reproduces mmseg's
whole-image test of the same weights (random ones here): the UperNet graph
from tools/deployment/export_onnx.py, scikit-image's cat photograph, the
pre- and post-processing of the README and of
fcaformer_mm.deployment.seg_onnx, against MMSegInferencer."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip('onnxruntime')
pytest.importorskip('mmseg')
skimage_data = pytest.importorskip('skimage.data')

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / 'configs' / 'upernet_fcaformer_l2_ade20k.py'
EXPORT = ROOT / 'tools' / 'deployment' / 'export_onnx.py'


def readme_example() -> str:
    """The Python block of the README's ONNX example
    (the block after the ``onnx-example`` marker)."""
    text = (ROOT / 'README.md').read_text(encoding='utf-8')
    match = re.search(r'<!-- onnx-example -->\s*```python\n(.*?)```', text,
                      re.S)
    assert match, 'the README lost its onnxruntime example'
    return match.group(1)


@pytest.fixture(scope='module')
def exported(tmp_path_factory) -> dict:
    """Random weights in a checkpoint, and their graph exported by the
    tool."""
    from mmengine.config import Config
    from mmseg.apis import init_model

    import fcaformer_mm  # noqa: F401

    tmp = tmp_path_factory.mktemp('onnx')
    cfg = Config.fromfile(str(CONFIG))
    cfg.model.backbone.init_cfg = None
    cfg.model.test_cfg = dict(mode='whole')
    torch.manual_seed(0)
    model = init_model(cfg, device='cpu')
    with torch.no_grad():  # non-trivial statistics, so that all of them act
        for name, tensor in model.state_dict().items():
            if name.endswith('running_var'):
                tensor.uniform_(0.5, 1.5)
            elif name.endswith('running_mean'):
                tensor.normal_(0, 0.2)
    checkpoint = tmp / 'random.pth'
    torch.save({'state_dict': model.state_dict()}, checkpoint)
    onnx_path = tmp / 'upernet.onnx'
    proc = subprocess.run([
        sys.executable, str(EXPORT), str(CONFIG), '--checkpoint',
        str(checkpoint), '--out', str(onnx_path), '--shape', '256', '256'
    ], cwd=tmp, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dict(cfg=cfg, checkpoint=checkpoint, onnx=onnx_path, dir=tmp)


@pytest.fixture(scope='module')
def torch_result(exported) -> tuple[np.ndarray, np.ndarray]:
    """mmseg's whole-image test of the photograph: labels and logits at the
    image size."""
    from mmseg.apis import MMSegInferencer

    image_bgr = np.ascontiguousarray(skimage_data.chelsea()[..., ::-1])
    inferencer = MMSegInferencer(
        model=exported['cfg'], weights=str(exported['checkpoint']),
        device='cpu')
    sample = inferencer(image_bgr, return_datasamples=True)
    labels = sample.pred_sem_seg.data[0].numpy()
    logits = sample.seg_logits.data.numpy()
    return labels, logits


def test_readme_example_matches_mmseg_whole_image_test(
        exported, torch_result, monkeypatch):
    monkeypatch.chdir(exported['dir'])  # the example opens 'upernet.onnx'
    scope: dict = {}
    exec(compile(readme_example(), 'README example', 'exec'), scope)
    labels, logits = scope['labels'], scope['logits']
    ref_labels, ref_logits = torch_result
    image = skimage_data.chelsea()
    assert labels.shape == ref_labels.shape == image.shape[:2]
    assert logits.shape == ref_logits.shape == (150, *image.shape[:2])
    scale = np.abs(ref_logits).max()
    assert np.abs(logits - ref_logits).max() <= 1e-3 * scale
    # Labels differ only where two classes are within rounding of a tie.
    assert (labels == ref_labels).mean() >= 0.999
    assert len(np.unique(ref_labels)) > 1  # a map, not one class


def test_library_matches_readme_and_mmseg(exported, torch_result):
    from mmengine.config import Config

    from fcaformer_mm.deployment.seg_onnx import (
        OnnxSegmentor,
        SegOnnxSettings,
        settings_from_config,
    )

    settings = settings_from_config(Config.fromfile(str(CONFIG)))
    assert settings == SegOnnxSettings()  # the README's constants
    segmentor = OnnxSegmentor(str(exported['onnx']), settings)
    image = skimage_data.chelsea()
    logits = segmentor.logits(image)
    ref_labels, ref_logits = torch_result
    assert np.abs(logits - ref_logits).max() <= 1e-3 * np.abs(
        ref_logits).max()
    assert (segmentor(image) == ref_labels).mean() >= 0.999


def test_graph_is_logits_at_a_quarter_without_resize(exported):
    import onnxruntime as ort

    session = ort.InferenceSession(
        str(exported['onnx']), providers=['CPUExecutionProvider'])
    (inp, ) = session.get_inputs()
    (out, ) = session.get_outputs()
    assert inp.name == 'input' and out.name == 'seg_logits'
    x = np.zeros((1, 3, 130, 203), np.float32)
    (y, ) = session.run(None, {'input': x})
    assert y.shape == (1, 150, 33, 51)  # ceil(130 / 4), ceil(203 / 4)
