"""The models the laboratory measures, built one way for every tool.

- :func:`backbone_cfg` / :func:`build_backbone`: the dense backbones of the
  benchmark (FcaFormer, its official code, ConvNeXt-T, Swin-T) with the drop
  path and layer scale of their UperNet ADE20K configs
  (:data:`UPERNET_BACKBONE`);
- :func:`build_whole`: a config's model with one of those backbones;
- :class:`Subject`: a built model and the calls the metrics time (inference,
  a training loss);
- :func:`quiet_logs`: hides mmengine's per-parameter initialisation report.

Example:
    >>> import torch
    >>> from fcaformer_mm.analysis.models import build_backbone
    >>> model = build_backbone('fcaformer', arch='l1')
    >>> [o.shape[1] for o in model(torch.randn(1, 3, 64, 64))]
    [96, 192, 384, 768]
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from fcaformer_mm.utils.model_builder import (
    build_model_from_config,
    tensor_forward,
)

__all__ = [
    'MODEL_NAMES', 'UPERNET_BACKBONE', 'L2', 'OfficialBackbone',
    'quiet_logs', 'backbone_cfg', 'build_backbone', 'build_whole',
    'images', 'Subject'
]

#: The dense backbones.
MODEL_NAMES = ('fcaformer', 'fcaformer-deploy', 'official', 'convnext-t',
               'swin-t')
#: Drop path and layer scale of the backbones in the UperNet ADE20K configs
#: (``configs/upernet_fcaformer_l2_ade20k.py``; mmseg's
#: ``convnext-tiny_upernet_8xb2-amp-160k_ade20k-512x512.py`` and
#: ``swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py``).
UPERNET_BACKBONE = {
    'fcaformer': dict(drop_path_rate=0.1, layer_scale_init_value=1.0),
    'convnext-t': dict(drop_path_rate=0.4, layer_scale_init_value=1.0),
    'swin-t': dict(drop_path_rate=0.3),
    'official': dict(drop_path_rate=0.1),
}
#: FcaFormer-L2 as in the official dense configs.
L2 = dict(
    dims=[96, 192, 320, 480],
    depths=[2, 2, 7, 2],
    num_heads=[0, 0, 10, 15],
    seg_head_dims=[96, 192, 384, 768])


@contextlib.contextmanager
def quiet_logs() -> Iterator[None]:
    """Hide mmengine's per-parameter initialisation report."""
    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


class OfficialBackbone(nn.Module):
    """The official dense L2 behind an OpenMMLab-style interface.

    Set :attr:`official_cls` first (from
    :func:`fcaformer_mm.analysis.official.load_official_dense`).

    Args:
        drop_path_rate (float): Drop path of the official model. Defaults
            to 0.
        with_cp (bool): Ignored: the official model has no activation
            checkpointing. Defaults to False.
    """

    official_cls: type | None = None

    def __init__(self, drop_path_rate: float = 0., with_cp: bool = False,
                 **kwargs) -> None:
        super().__init__()
        if self.official_cls is None:
            raise RuntimeError(
                'OfficialBackbone.official_cls is not set: load the '
                'official code with load_official_dense(CHECKOUT) first '
                '(the tools take it as --official-path).')
        self.model = self.official_cls(drop_path_rate=drop_path_rate, **L2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model(x))

    def init_weights(self) -> None:
        """The official initialisation already ran in ``__init__``."""


def backbone_cfg(name: str, with_cp: bool = False,
                 drop_path_rate: float | None = None,
                 arch: str = 'l2') -> dict:
    """Config of a dense backbone, usable in any OpenMMLab scope.

    Args:
        name (str): One of :data:`MODEL_NAMES`.
        with_cp (bool): Activation checkpointing. Defaults to False.
        drop_path_rate (float, optional): Defaults to that of the
            backbone's UperNet config (:data:`UPERNET_BACKBONE`).
        arch (str): FcaFormer arch of ``fcaformer*`` (outputs of widths
            96, 192, 384, 768 for every arch). Defaults to ``'l2'``.

    Raises:
        ValueError: For an unknown name.
    """
    family = 'fcaformer' if name.startswith('fcaformer') else name
    recipe = dict(UPERNET_BACKBONE.get(family, {}))
    if drop_path_rate is None:
        drop_path_rate = recipe.get('drop_path_rate', 0.)
    layer_scale = recipe.get('layer_scale_init_value')
    if name in ('fcaformer', 'fcaformer-deploy'):
        return dict(
            type='fcaformer_mm.FcaFormer', arch=arch,
            out_indices=(0, 1, 2, 3), out_channels=(96, 192, 384, 768),
            drop_path_rate=drop_path_rate,
            layer_scale_init_value=layer_scale, with_cp=with_cp)
    if name == 'official':
        return dict(type=OfficialBackbone, drop_path_rate=drop_path_rate,
                    with_cp=with_cp)
    if name == 'convnext-t':
        return dict(
            type='mmpretrain.ConvNeXt', arch='tiny',
            out_indices=(0, 1, 2, 3), drop_path_rate=drop_path_rate,
            layer_scale_init_value=layer_scale,
            gap_before_final_norm=False, with_cp=with_cp)
    if name == 'swin-t':
        return dict(
            type='mmpretrain.SwinTransformer', arch='tiny', img_size=224,
            out_indices=(0, 1, 2, 3),
            # Needed for inputs under 224x224 only (tests); no effect above.
            pad_small_map=True, drop_path_rate=drop_path_rate,
            with_cp=with_cp)
    raise ValueError(f'Unknown model {name!r}; choose from {MODEL_NAMES}.')


def _import_hosts() -> None:
    import mmpretrain.models  # noqa: F401

    import fcaformer_mm  # noqa: F401


def _deploy_if_asked(model: nn.Module, name: str) -> nn.Module:
    if name == 'fcaformer-deploy':
        model.eval()
        getattr(model, 'backbone', model).switch_to_deploy()
    return model


def build_backbone(name: str, with_cp: bool = False,
                   arch: str = 'l2') -> nn.Module:
    """Build and initialise a dense backbone (see :func:`backbone_cfg`);
    ``fcaformer-deploy`` comes deployed, in eval mode."""
    from mmengine.registry import MODELS

    _import_hosts()
    model = MODELS.build(backbone_cfg(name, with_cp, arch=arch))
    if hasattr(model, 'init_weights'):
        with quiet_logs():
            model.init_weights()
    return _deploy_if_asked(model, name)


def build_whole(config: str, name: str, with_cp: bool = False,
                arch: str = 'l2') -> tuple[nn.Module, str]:
    """The config's model with the backbone ``name`` (keeping the config's
    drop path), and its default scope."""
    from mmengine.config import Config

    _import_hosts()
    cfg = Config.fromfile(config)
    drop_path_rate = cfg.model.backbone.get('drop_path_rate', 0.)
    model, scope = build_model_from_config(
        cfg, backbone=backbone_cfg(name, with_cp, drop_path_rate, arch))
    return _deploy_if_asked(model, name), scope


def images(batch: int, size: Sequence[int], device: str = 'cpu',
           seed: int = 0) -> torch.Tensor:
    """``batch`` standard-normal images of ``size`` (H, W), seeded."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, *size, generator=gen).to(device)


def _seg_samples(x: torch.Tensor) -> list:
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    shape = tuple(x.shape[-2:])
    gen = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(x.shape[0]):
        sample = SegDataSample(
            metainfo=dict(img_shape=shape, ori_shape=shape, pad_shape=shape))
        label = torch.randint(0, 150, (1, *shape), generator=gen)
        sample.gt_sem_seg = PixelData(data=label.to(x.device))
        samples.append(sample)
    return samples


class Subject:
    """One model to measure, with the calls that the metrics time.

    Args:
        label (str): Its name in reports.
        name (str): The model's name (:data:`MODEL_NAMES` or an edge-table
            name).
        model (nn.Module): The model.
        scope (str, optional): Its default scope; None for a backbone.
    """

    def __init__(self, label: str, name: str, model: nn.Module,
                 scope: str | None) -> None:
        self.label = label
        self.name = name
        self.model = model
        self.scope = scope
        self.compiled: nn.Module | None = None
        self.compile_s: float | None = None
        self.optimizer = None
        self.scaler = None

    @property
    def trainable(self) -> bool:
        """Whether the training metrics apply (not to deployed models nor
        to detectors)."""
        if self.name.endswith('-deploy'):
            return False
        return self.scope in (None, 'mmseg', 'mmpretrain')

    def infer(self, x: torch.Tensor, compiled: bool = False) -> object:
        """The tensor path on ``x``."""
        model = self.compiled if compiled else self.model
        return tensor_forward(self.scope)(model, x)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """The training loss on ``x``: the sum of the output means
        (backbones), the model's losses on random labels (segmentors), the
        cross-entropy of the class scores against fixed random labels
        (classifiers)."""
        if self.scope is None:
            return sum(o.float().mean() for o in self.model(x))
        if self.scope == 'mmpretrain':
            # Every classifier alike (EfficientFormer's distillation head
            # has no loss in mmpretrain).
            scores = tensor_forward(self.scope)(self.model, x)
            labels = torch.randint(
                scores.shape[1], (scores.shape[0], ),
                generator=torch.Generator().manual_seed(0)).to(scores.device)
            return nn.functional.cross_entropy(scores.float(), labels)
        losses = self.model.loss(x, _seg_samples(x))
        return sum(v for k, v in losses.items()
                   if 'loss' in k and isinstance(v, torch.Tensor))
