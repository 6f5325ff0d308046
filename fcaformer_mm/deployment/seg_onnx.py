"""Whole-image segmentation with an exported UperNet graph and onnxruntime.

``tools/deployment/export_onnx.py CONFIG`` exports a segmentor's tensor
path: normalised RGB images in (``input``, float32, ``(N, 3, H, W)``, any
``H`` and ``W``), logits at 1/4 of that size out (``seg_logits``,
``(N, num_classes, ceil(H / 4), ceil(W / 4))``). The graph has no resize, no
normalisation and no sliding window. :func:`preprocess` and
:func:`postprocess` add around it what mmseg's test does around the model
with ``model.test_cfg.mode='whole'``:

1. resize the image like the config's test pipeline (``Resize`` with
   ``keep_ratio``: the largest size within ``scale``, bilinear), then
   subtract ``mean`` and divide by ``std`` (RGB order);
2. run the graph;
3. resize the logits bilinearly to the resized image, then to the
   original image (``align_corners=False``), and take the argmax.

Only numpy and OpenCV are needed here (no torch, no OpenMMLab);
:func:`settings_from_config` reads the settings from a config once, so they
can be stored beside the graph.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ['SegOnnxSettings', 'settings_from_config', 'rescaled_size',
           'preprocess', 'postprocess', 'OnnxSegmentor']


@dataclass
class SegOnnxSettings:
    """What the graph needs around it.

    Args:
        scale (tuple[int, int]): ``Resize`` scale of the test pipeline, as
            mmcv gives it (long edge, short edge limits, in either order).
        mean (Sequence[float]): Per-channel mean, RGB.
        std (Sequence[float]): Per-channel std, RGB.
    """
    scale: tuple[int, int] = (2048, 512)
    mean: Sequence[float] = (123.675, 116.28, 103.53)
    std: Sequence[float] = (58.395, 57.12, 57.375)


def settings_from_config(cfg) -> SegOnnxSettings:
    """The resize and normalisation of an mmseg config's whole-image test.

    Args:
        cfg (mmengine.config.Config): An mmseg config.

    Raises:
        ValueError: If the test pipeline has no keep-ratio ``Resize`` or the
            data preprocessor does not convert BGR to RGB (the graph is
            exported for RGB input).
    """
    pipeline = cfg.test_dataloader.dataset.pipeline
    resize = [t for t in pipeline if str(t['type']).endswith('Resize')]
    if len(resize) != 1 or not resize[0].get('keep_ratio', False):
        raise ValueError('The test pipeline needs one Resize with '
                         f'keep_ratio=True, got {resize}.')
    preprocessor = cfg.model.data_preprocessor
    if not preprocessor.get('bgr_to_rgb', False):
        raise ValueError('The data preprocessor must have bgr_to_rgb=True '
                         '(mean and std in RGB order).')
    return SegOnnxSettings(
        scale=tuple(resize[0]['scale']),
        mean=tuple(preprocessor['mean']),
        std=tuple(preprocessor['std']))


def rescaled_size(height: int, width: int,
                  scale: Sequence[int]) -> tuple[int, int]:
    """``(H, W)`` after a keep-ratio resize into ``scale``: the factor is
    the largest that keeps the long edge within ``max(scale)`` and the
    short edge within ``min(scale)``, sizes rounded half up (mmcv's
    ``imrescale``)."""
    factor = min(max(scale) / max(height, width),
                 min(scale) / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def preprocess(image_rgb: np.ndarray,
               settings: SegOnnxSettings) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 RGB image -> the graph's ``(1, 3, h, w)``
    float32 input."""
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ValueError('Expected an (H, W, 3) RGB image, got shape '
                         f'{image_rgb.shape}.')
    h, w = rescaled_size(*image_rgb.shape[:2], settings.scale)
    resized = cv2.resize(image_rgb, (w, h), interpolation=cv2.INTER_LINEAR)
    mean = np.asarray(settings.mean, np.float32)
    std = np.asarray(settings.std, np.float32)
    x = (resized.astype(np.float32) - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def _resize_maps(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of ``(C, h, w)`` maps (half-pixel centres, as
    ``F.interpolate(..., align_corners=False)``), in groups of channels
    that OpenCV takes (at most 128 per image in OpenCV 5, 512 in 4.x)."""
    group = 128
    out = [
        cv2.resize(
            np.ascontiguousarray(maps[i:i + group].transpose(1, 2, 0)),
            (width, height), interpolation=cv2.INTER_LINEAR)
        for i in range(0, maps.shape[0], group)
    ]
    out = [o[..., None] if o.ndim == 2 else o for o in out]
    return np.concatenate(out, axis=2).transpose(2, 0, 1)


def postprocess(seg_logits: np.ndarray, input_hw: Sequence[int],
                image_hw: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """The graph's ``(1, C, h/4, w/4)`` logits -> the ``(H, W)`` class map
    of the original image, and the ``(C, H, W)`` logits behind it.

    Args:
        seg_logits (np.ndarray): The graph's output for one image.
        input_hw (Sequence[int]): ``(h, w)`` of the graph's input.
        image_hw (Sequence[int]): ``(H, W)`` of the original image.
    """
    logits = seg_logits[0].astype(np.float32)
    logits = _resize_maps(logits, *input_hw)
    logits = _resize_maps(logits, *image_hw)
    return logits.argmax(axis=0).astype(np.int64), logits


class OnnxSegmentor:
    """An exported segmentor in an onnxruntime session, with the whole-image
    pre- and post-processing of its config.

    Args:
        onnx_path (str): The graph from ``export_onnx.py CONFIG``.
        settings (SegOnnxSettings): Resize and normalisation (see
            :func:`settings_from_config`).
        providers (Sequence[str]): onnxruntime execution providers.
            Defaults to the CPU.

    Example:
        >>> from skimage import data
        >>> seg = OnnxSegmentor('upernet.onnx', SegOnnxSettings())
        >>> labels = seg(data.chelsea())        # (300, 451) class indices
    """

    def __init__(self, onnx_path: str, settings: SegOnnxSettings,
                 providers: Sequence[str] = ('CPUExecutionProvider', )):
        import onnxruntime as ort

        self.session = ort.InferenceSession(
            str(onnx_path), providers=list(providers))
        self.settings = settings

    def logits(self, image_rgb: np.ndarray) -> np.ndarray:
        """The ``(C, H, W)`` logits at the original image size."""
        x = preprocess(image_rgb, self.settings)
        (seg_logits, ) = self.session.run(None, {'input': x})
        return postprocess(seg_logits, x.shape[2:], image_rgb.shape[:2])[1]

    def __call__(self, image_rgb: np.ndarray) -> np.ndarray:
        """The ``(H, W)`` class map (int64) of an RGB uint8 image."""
        return self.logits(image_rgb).argmax(axis=0).astype(np.int64)
