"""Build a config's model the way the tools need it, and call its tensor
path: one helper shared by ``get_flops.py``, ``benchmark.py`` and
``export_onnx.py``, and the argparse type of their ``--shape``."""
from __future__ import annotations

import argparse
import copy
from collections.abc import Callable

import torch
from mmengine.config import Config
from torch import nn


def build_model_from_config(config: str | Config,
                            cfg_options: dict | None = None,
                            backbone: dict | None = None
                            ) -> tuple[nn.Module, str]:
    """Build ``cfg.model`` in the config's default scope, for one process.

    ``custom_imports`` are imported first, a top-level ``data_preprocessor``
    is handed to the model as mmengine's Runner does, and SyncBN layers are
    turned into BatchNorm (mmengine's ``revert_sync_batchnorm``: same
    numbers on one process, and no process group needed). The default
    scope is set only while building, so that the caller keeps its own. No
    weights are loaded (``init_weights`` is not called).

    Args:
        config (str | Config): The config or its path.
        cfg_options (dict, optional): Settings merged into the config.
            Defaults to None.
        backbone (dict, optional): A backbone config to use instead of the
            config's. Defaults to None.

    Returns:
        tuple[nn.Module, str]: The model (in training mode, as built) and
        the config's default scope.

    Raises:
        SyntaxError: The config is not valid Python (file and line named).
        ConfigOptionError: A top-level key of ``cfg_options`` is unknown.
    """
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import MODELS, DefaultScope
    from mmengine.utils import import_modules_from_strings

    from fcaformer_mm.utils.entrypoint import check_cfg_options, read_config

    cfg = config if isinstance(config, Config) else read_config(config)
    if cfg_options:
        check_cfg_options(cfg, cfg_options)
        cfg.merge_from_dict(cfg_options)
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg['custom_imports'])
    scope = cfg.get('default_scope') or 'mmengine'
    model_cfg = copy.deepcopy(cfg.model)
    if cfg.get('data_preprocessor') is not None:
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    if backbone is not None:
        model_cfg.backbone = backbone
    with DefaultScope.overwrite_default_scope(scope):
        model = MODELS.build(model_cfg)
    return revert_sync_batchnorm(model), scope


def _detector_samples(x: torch.Tensor) -> list:
    from mmdet.structures import DetDataSample

    shape = tuple(x.shape[-2:])
    meta = dict(img_shape=shape, ori_shape=shape, pad_shape=shape,
                batch_input_shape=shape, scale_factor=(1., 1.))
    return [DetDataSample(metainfo=dict(meta)) for _ in range(x.shape[0])]


def tensor_forward(
        scope: str | None) -> Callable[[nn.Module, torch.Tensor], object]:
    """The tensor path of a host's model, as ``forward(model, images)``.

    ``_forward`` for mmseg segmentors (backbone, neck and decode head: no
    auxiliary head, no sliding window) and mmdet detectors (RPN proposals
    then the RoI heads, with data samples of the images' size),
    ``forward(mode='tensor')`` for mmpretrain models, and a plain call for
    anything else (a backbone).

    Args:
        scope (str, optional): The model's default scope; None for a plain
            module.
    """
    if scope == 'mmdet':
        return lambda m, x: m._forward(x, _detector_samples(x))
    if scope == 'mmseg':
        return lambda m, x: m._forward(x)
    if scope == 'mmpretrain':
        return lambda m, x: m(x, mode='tensor')
    return lambda m, x: m(x)


class TensorForward(nn.Module):
    """A host model's tensor path as a module with ``forward(images)``, for
    tracing, export and counting.

    Args:
        model (nn.Module): The model.
        scope (str, optional): Its default scope, see :func:`tensor_forward`.
    """

    def __init__(self, model: nn.Module, scope: str | None) -> None:
        super().__init__()
        self.model = model
        self.scope = scope
        self._forward = tensor_forward(scope)

    def forward(self, x: torch.Tensor) -> object:
        return self._forward(self.model, x)


def image_side(text: str) -> int:
    """An argparse type: one side of an input image, a positive number of
    pixels (``--shape`` of ``get_flops.py`` and ``export_onnx.py``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'{text!r} is not a whole number of pixels') from None
    if value <= 0:
        raise argparse.ArgumentTypeError(
            f'{value} is not a size: sides are positive numbers of pixels, '
            'e.g. --shape 512 2048')
    return value
