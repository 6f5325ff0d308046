"""FcaFormer backbone: the architecture, with the official module and
parameter names, so that official checkpoints load without conversion
(layers, windows, checks, checkpoints and layer decay: :mod:`..utils`)."""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import ClassVar

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.model.weight_init import initialize
from torch import nn

from fcaformer_mm.registry import MODELS

from ..utils import arguments, windows
from ..utils.checkpoint import (
    is_deployed_state_dict,
    load_pretrained,
    split_init_cfg,
)
from ..utils.layer_decay import get_layer_id_layer_wise_cab, num_decay_layers
from ..utils.layers import (
    ConvBN,
    DropPath,
    LayerNorm2d,
    checkpointed_call,
    drop_path_per_window,
    fold_for_deploy,
    official_init,
    scaled,
)

__all__ = ['FcaFormer']


class Stem(BaseModule):
    """Stem: Conv-BN 3x3/2, GELU, Conv-BN 3x3/2 (``in_channels`` to
    ``embed_dim // 2`` to ``embed_dim`` channels)."""

    def __init__(self, in_channels: int, embed_dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            ConvBN(in_channels, embed_dim // 2, 3, 2, 1), nn.GELU(),
            ConvBN(embed_dim // 2, embed_dim, 3, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class Downsample(BaseModule):
    """Stride-2 transition between two stages: Conv-BN 1x1, GELU,
    depthwise Conv-BN 3x3/2, GELU, Conv-BN 1x1 (``in_channels`` to
    ``out_channels``)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = ConvBN(in_channels, out_channels)
        self.conv2 = ConvBN(
            out_channels, out_channels, 3, 2, 1, groups=out_channels)
        self.conv3 = ConvBN(out_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(F.gelu(self.conv2(F.gelu(self.conv1(x)))))


class ConvNeXtBlock(BaseModule):
    """ConvNeXt block of stages 0 and 1.

    Args:
        dim (int): Channels.
        drop_path_rate (float): Stochastic depth rate. Defaults to 0.
        layer_scale_init_value (float): Initial layer scale; no ``gamma`` is
            created when it is not positive, as in the official code.
            Defaults to 1e-6.
    """

    #: Layer scales and the linear layers whose outputs they scale, which
    #: ``FcaFormer.switch_to_deploy()`` folds them into.
    layer_scales: ClassVar[dict[str, str]] = {'gamma': 'pwconv2'}

    def __init__(self, dim: int, drop_path_rate: float = 0.,
                 layer_scale_init_value: float = 1e-6) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full(
            (dim, ), float(layer_scale_init_value))) \
            if layer_scale_init_value > 0 else None
        self.drop_path = DropPath(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        x = scaled(self.gamma, self.pwconv2(self.act(self.pwconv1(x))))
        return shortcut + self.drop_path(x.permute(0, 3, 1, 2))



class Mlp(BaseModule):
    """Feed-forward network (``dim`` to ``hidden_dim`` to ``dim``) of an
    FCA block, with a LayerNorm of its own (``norm``) in front of ``fc1``;
    the block applies ``norm2`` before it too (both hold trained weights)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class FcaBlock(BaseModule):
    """Forward-cross-attention block of stages 2 and 3.

    It pads the map to whole windows, attends inside each window and to the
    cross tokens of the earlier blocks, and crops back, as the official
    dense block does (at 224x224 nothing is padded: the official
    classifier's block). Cross tokens are projected to keys and values only.

    Args:
        dim (int): Channels.
        window_size (int): Side of the square attention window.
        num_heads (int): Attention heads.
        block_index (int): Position of the block in its stage; block ``i``
            attends to the cross tokens of the ``i`` blocks before it.
        make_cross_tokens (bool): Whether the block produces cross tokens for
            the blocks after it (all blocks but the last of a stage).
        mlp_ratio (float): Hidden width of the MLP relative to ``dim``.
            Defaults to 4.
        drop_path_rate (float): Stochastic depth rate, drawn per window as
            in the official code. Defaults to 0.
        layer_scale_init_value (float): Initial value of ``gamma_1`` and
            ``gamma_2``. Defaults to 1e-6.
    """

    layer_scales: ClassVar[dict[str, str]] = {
        'gamma_1': 'proj',
        'gamma_2': 'mlp.fc2'
    }

    def __init__(self, dim: int, window_size: int, num_heads: int,
                 block_index: int, make_cross_tokens: bool,
                 mlp_ratio: float = 4., drop_path_rate: float = 0.,
                 layer_scale_init_value: float = 1e-6) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f'The channels ({dim}) must be divisible by the '
                             f'number of heads ({num_heads}).')
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        self.scale = (dim // num_heads)**-0.5
        scale = float(layer_scale_init_value)
        self.gamma_1 = nn.Parameter(torch.full((dim, ), scale))
        self.gamma_2 = nn.Parameter(torch.full((dim, ), scale))
        # Token-merging conv (TME): one cross token per 4x4 patch of window.
        self.dw_conv = nn.Conv2d(dim, dim, 7, stride=4, padding=3, groups=dim,
                                 bias=False) if make_cross_tokens else None
        self.num_cross = block_index * math.ceil(window_size / 4)**2
        if self.num_cross > 0:
            self.s_token_bias = nn.Parameter(
                torch.zeros(1, num_heads, 1, self.num_cross))
            self.s_norm = nn.LayerNorm(dim)
            self.s_scale_factors = nn.Parameter(
                torch.ones(1, self.num_cross, 1))
        self.norm1 = nn.LayerNorm(dim)
        self.attention_biases = nn.Parameter(
            torch.zeros(num_heads, window_size * window_size))
        # The official (N, N) offset index, with a column per cross key
        # (not in checkpoints): see :func:`..utils.windows.mask_index`.
        self.register_buffer('attention_bias_idxs',
                             windows.mask_index(window_size, self.num_cross),
                             persistent=False)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.local_conv = ConvBN(dim, dim, 3, 1, 1, groups=dim)
        self.drop_path = DropPath(drop_path_rate)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def _load_from_state_dict(self, state_dict, prefix, *args,
                              **kwargs) -> None:
        # The index is not in checkpoints: make it anew, so that a model
        # built on the meta device and materialised by ``to_empty()`` holds
        # a real one once its weights are loaded.
        self.attention_bias_idxs = windows.mask_index(
            self.window_size, self.num_cross, self.attention_biases.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def attention_mask(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The additive attention mask ``(1, heads, N, N + num_cross)``:
        the relative position bias gathered from ``attention_biases``, then
        ``s_token_bias`` for the cross keys (in ``dtype``, by default that
        of ``attention_biases``)."""
        return windows.attention_mask(
            self.attention_biases, self.attention_bias_idxs,
            self.s_token_bias if self.num_cross > 0 else None, dtype)

    def attention(self, x: torch.Tensor,
                  cross: torch.Tensor | None) -> torch.Tensor:
        """Multi-head attention of ``(nW, N, C)`` window tokens to the
        window and to the ``(nW, num_cross, C)`` cross tokens, before
        ``proj``."""
        # Called first, so that weights made by forward pre-hooks (pruning,
        # weight norm) are current when the cross tokens read them below.
        qkv = self.qkv(x)
        if self.num_cross > 0:
            if cross is None or cross.shape[1] != self.num_cross:
                got = None if cross is None else tuple(cross.shape)
                raise ValueError(f'Expected {self.num_cross} cross tokens '
                                 f'per window, got {got}.')
            cross = self.s_norm(cross * self.s_scale_factors)
            # Cross tokens serve as keys and values only, so the query third
            # of the shared ``qkv`` projection is not computed for them.
            cross = F.linear(cross, self.qkv.weight[self.dim:],
                             self.qkv.bias[self.dim:])
        q, k, v = windows.split_heads(qkv, cross, self.num_heads)
        # One softmax spans the window's keys and the cross keys.
        x = F.scaled_dot_product_attention(
            q, k, v, attn_mask=self.attention_mask(q.dtype), scale=self.scale)
        return x.transpose(1, 2).flatten(2)

    def forward(self, x: torch.Tensor, cross: torch.Tensor | None = None,
                pad_top_left: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run the block on a ``(B, H, W, C)`` map.

        Args:
            x (torch.Tensor): ``(B, H, W, C)`` map of real positions.
            cross (torch.Tensor, optional): ``(num_windows, num_cross, C)``
                cross tokens of the earlier blocks, windows row-major.
            pad_top_left (bool): Pad at the top and left (True) or at the
                bottom and right. Defaults to True.

        Returns:
            tuple: The new map, and this block's cross tokens
            ``(num_windows, ceil(window_size / 4)**2, C)`` or None.
        """
        batch, height, width, dim = x.shape
        ws = self.window_size
        pad_h, pad_w = (-height) % ws, (-width) % ws
        top, left = (pad_h, pad_w) if pad_top_left else (0, 0)
        rows, cols = (height + pad_h) // ws, (width + pad_w) // ws
        x = windows.partition(x, rows, cols, ws,
                              (top, pad_h - top, left, pad_w - left))
        x = x + self.drop_path(scaled(
            self.gamma_1, self.proj(self.attention(self.norm1(x), cross))))

        x = x.reshape(-1, ws, ws, dim).permute(0, 3, 1, 2)
        new_cross = None
        if self.dw_conv is not None:
            new_cross = self.dw_conv(x).flatten(2).transpose(1, 2)
        # The official block has no shortcut around ``local_conv``.
        x = self.local_conv(x).permute(0, 2, 3, 1)
        x = windows.merge(x, batch, rows, cols, ws, (top, left, height, width))

        mlp = scaled(self.gamma_2, self.mlp(self.norm2(x)))
        return x + drop_path_per_window(mlp, self.drop_path.drop_prob,
                                        self.training, (rows, cols, ws),
                                        (top, left)), new_cross


class ConvStage(BaseModule):
    """Stage of ConvNeXt blocks (``layer_0``, ``layer_1``) of ``dim``
    channels, one block per drop-path rate, with a ``downsample`` to
    ``out_dim`` channels (called by the backbone); ``with_cp`` checkpoints
    each block."""

    def __init__(self, dim: int, out_dim: int,
                 drop_path_rates: Sequence[float],
                 layer_scale_init_value: float, with_cp: bool = False) -> None:
        super().__init__()
        self.with_cp = with_cp
        self.blocks = nn.Sequential(*[
            ConvNeXtBlock(dim, rate, layer_scale_init_value)
            for rate in drop_path_rates
        ])
        self.downsample = Downsample(dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the blocks; ``downsample`` is called by the backbone."""
        for block in self.blocks:
            x = checkpointed_call(block, self.with_cp, x)
        return x


class FcaStage(BaseModule):
    """Stage of FCA blocks (``layer_2``, ``layer_3``), arguments as for
    :class:`ConvStage` plus the ``window_size`` and ``num_heads`` of its
    blocks and ``with_downsample``. Blocks 0, 2, 4, ... pad at the top and
    left, blocks 1, 3, 5, ... at the bottom and right, as in the official
    dense model; cross tokens are handed on by window index."""

    def __init__(self, dim: int, out_dim: int, window_size: int,
                 num_heads: int, drop_path_rates: Sequence[float],
                 layer_scale_init_value: float, with_downsample: bool,
                 with_cp: bool = False) -> None:
        super().__init__()
        self.window_size = window_size
        self.with_cp = with_cp
        depth = len(drop_path_rates)
        self.blocks = nn.ModuleList([
            FcaBlock(dim, window_size, num_heads, block_index=i,
                     make_cross_tokens=i < depth - 1, drop_path_rate=rate,
                     layer_scale_init_value=layer_scale_init_value)
            for i, rate in enumerate(drop_path_rates)
        ])
        self.downsample = Downsample(dim, out_dim) if with_downsample \
            else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the blocks; ``downsample`` is called by the backbone."""
        # The blocks work on (B, H, W, C) maps: a view of a channels-last
        # input, and the output is a channels-last (B, C, H, W) view.
        x = x.permute(0, 2, 3, 1).contiguous()
        cross_tokens: list[torch.Tensor] = []
        for i, block in enumerate(self.blocks):
            cross = torch.cat(cross_tokens, dim=1) if cross_tokens else None
            x, new_cross = checkpointed_call(block, self.with_cp, x, cross,
                                             i % 2 == 0)
            if new_cross is not None:
                cross_tokens.append(new_cross)
        return x.permute(0, 3, 1, 2)


_DENSE_WIDTHS_L2 = (96, 192, 384, 768)
_DEPLOYED_TRAINING = (
    'This FcaFormer is deployed (switch_to_deploy() folded its BatchNorm '
    'statistics and layer scales), so it cannot be trained: train the model '
    'and deploy a copy (copy.deepcopy(model).switch_to_deploy()).')


@MODELS.register_module()
class FcaFormer(BaseModule):
    """FcaFormer backbone.

    A PyTorch implementation of `FcaFormer: Forward Cross Attention in Hybrid
    Vision Transformer <https://arxiv.org/abs/2211.07198>`_ (ICCV 2023),
    written after the `official code <https://github.com/hkzhang-git/FcaFormer>`_
    and keeping its parameter names, so that official checkpoints load as
    they are.

    Stages 0 and 1 are ConvNeXt blocks; stages 2 and 3 are FCA blocks that
    attend inside windows (padded to, and cropped from, whole windows as in
    the official dense model) and to the cross tokens of the earlier blocks
    of their stage. At 224x224 this is exactly the official classifier.

    Args:
        arch (str | dict): ``'l1'``, ``'l2'``, ``'l3'`` or ``'l4'`` (also
            ``'fcaformer-l2'`` etc.), or a dict with ``embed_dims`` and
            ``depths`` (4 entries each) and ``num_heads`` (of stages 2 and
            3; a 4-sequence as in the official code is accepted). Defaults
            to ``'l2'``.
        in_channels (int): Input image channels. Defaults to 3.
        out_type (str): ``'featmap'`` (dense: ``norm{i}(head{i}(x))`` maps
            of the output stages) or ``'avg_featmap'`` (classification: the
            last stage averaged and normalised by ``norm_head``). Defaults
            to ``'featmap'``.
        out_indices (int | Sequence[int], optional): Output stages, negative
            values counting from the end. Defaults to None: all four for
            ``'featmap'``, the last one (the only allowed value) for
            ``'avg_featmap'``.
        out_channels (Sequence[int], optional): Widths of the four dense
            outputs. Defaults to None: ``(96, 192, 384, 768)`` for L2 as in
            the official dense configs, the stage widths for the others.
        window_sizes (Sequence[int]): Attention window sides of stages 2 and
            3. Defaults to ``(14, 7)``.
        drop_path_rate (float): Stochastic depth rate in [0, 1), linear from
            0 over all blocks. Defaults to 0.
        layer_scale_init_value (float): Initial layer scale of all blocks
            (the official classifier uses 1e-6, the dense configs 1.0).
            Defaults to 1e-6.
        frozen_stages (int): -1 freezes nothing, ``i`` the stem and stages
            0..i with the ``downsample`` layers between. Defaults to -1.
        norm_eval (bool): Keep BatchNorm in eval mode while training.
            Defaults to False.
        with_cp (bool): Checkpoint the activations of every block, of the
            stem and of the ``downsample`` layers. Defaults to False.
        channels_last (bool): Run on channels-last maps (same numbers,
            faster). Defaults to True.
        init_cfg (dict | list[dict], optional): None gives the official
            initialisation. ``dict(type='Pretrained', checkpoint=...,
            prefix=..., state_dict_key=...)`` loads official, OpenMMLab or
            plain checkpoints (:func:`..utils.checkpoint.load_pretrained`).
            Defaults to None.

    Example:
        >>> import torch
        >>> from fcaformer_mm.models import FcaFormer
        >>> model = FcaFormer(arch='l2').eval()
        >>> for out in model(torch.rand(1, 3, 224, 224)):
        ...     print(tuple(out.shape))
        (1, 96, 56, 56)
        (1, 192, 28, 28)
        (1, 384, 14, 14)
        (1, 768, 7, 7)
        >>> model = FcaFormer(arch='l1', out_type='avg_featmap').eval()
        >>> print(tuple(model(torch.rand(2, 3, 224, 224))[0].shape))
        (2, 320)
    """

    arch_zoo: ClassVar[dict[str, Mapping]] = {
        **dict.fromkeys(['l1', 'fcaformer-l1'], MappingProxyType(dict(
            embed_dims=(64, 128, 192, 320), depths=(2, 2, 6, 2),
            num_heads=(6, 10)))),
        **dict.fromkeys(['l2', 'fcaformer-l2'], MappingProxyType(dict(
            embed_dims=(96, 192, 320, 480), depths=(2, 2, 7, 2),
            num_heads=(10, 15)))),
        **dict.fromkeys(['l3', 'fcaformer-l3'], MappingProxyType(dict(
            embed_dims=(96, 192, 320, 512), depths=(3, 6, 12, 3),
            num_heads=(10, 16)))),
        **dict.fromkeys(['l4', 'fcaformer-l4'], MappingProxyType(dict(
            embed_dims=(128, 256, 512, 768), depths=(3, 6, 12, 3),
            num_heads=(16, 24)))),
    }
    out_types = ('featmap', 'avg_featmap')
    num_stages = 4

    def __init__(self,
                 arch: str | dict = 'l2',
                 in_channels: int = 3,
                 out_type: str = 'featmap',
                 out_indices: int | Sequence[int] | None = None,
                 out_channels: Sequence[int] | None = None,
                 window_sizes: Sequence[int] = (14, 7),
                 drop_path_rate: float = 0.,
                 layer_scale_init_value: float = 1e-6,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 channels_last: bool = True,
                 init_cfg: dict | list[dict] | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        is_l2 = str(arch).lower() in ('l2', 'fcaformer-l2')
        arch = arguments.parse_arch(arch, self.arch_zoo)
        self.embed_dims: list[int] = list(arch['embed_dims'])
        self.depths: list[int] = list(arch['depths'])
        self.num_heads: list[int] = list(arch['num_heads'])[-2:]
        self.in_channels = in_channels

        if out_type not in self.out_types:
            raise ValueError(f'Unsupported out_type {out_type!r}, please '
                             f'choose from {self.out_types}.')
        self.out_type = out_type
        self.out_indices = arguments.parse_out_indices(
            out_indices, self.num_stages, out_type == 'avg_featmap')

        if out_channels is None:
            out_channels = _DENSE_WIDTHS_L2 if is_l2 else self.embed_dims
        if len(out_channels) != self.num_stages:
            raise ValueError('out_channels must give one width per stage '
                             f'(4), got {list(out_channels)}.')
        self.out_channels: list[int] = list(out_channels)

        self.window_sizes = arguments.check_window_sizes(window_sizes)
        drop_path_rate = arguments.check_drop_path_rate(drop_path_rate)
        if not -1 <= frozen_stages < self.num_stages:
            raise ValueError('frozen_stages must be in [-1, 3], got '
                             f'{frozen_stages}.')
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self.channels_last = channels_last
        self.deployed = False

        rates = torch.linspace(0, drop_path_rate, sum(self.depths),
                               device='cpu').tolist()  # also under 'meta'
        ends = [sum(self.depths[:i + 1]) for i in range(self.num_stages)]
        stage_rates = [rates[e - d:e] for e, d in zip(ends, self.depths)]

        dims = self.embed_dims
        self.patch_embed = Stem(in_channels, dims[0])
        for i in range(2):
            self.add_module(
                f'layer_{i}',
                ConvStage(dims[i], dims[i + 1], stage_rates[i],
                          layer_scale_init_value, with_cp))
        for i in range(2, 4):
            self.add_module(
                f'layer_{i}',
                FcaStage(dims[i], dims[min(i + 1, 3)],
                         self.window_sizes[i - 2], self.num_heads[i - 2],
                         stage_rates[i], layer_scale_init_value,
                         with_downsample=i < 3, with_cp=with_cp))

        if out_type == 'featmap':
            for i in self.out_indices:
                width = self.out_channels[i]
                self.add_module(f'head{i}',
                                nn.Conv2d(dims[i], width, 1, bias=False))
                self.add_module(f'norm{i}', LayerNorm2d(width, eps=1e-6))
        else:
            self.norm_head = nn.LayerNorm(dims[3])

        self._freeze_stages()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Forward ``(B, in_channels, H, W)`` images of any size.

        Returns:
            tuple[torch.Tensor]: ``(B, out_channels[i], ceil(H / 2**(i+2)),
            ...)`` maps for each ``i`` in ``out_indices`` (``'featmap'``), or
            the 1-tuple ``((B, embed_dims[3]), )`` (``'avg_featmap'``).
        """
        if self.deployed and self.training:
            raise RuntimeError(_DEPLOYED_TRAINING)
        arguments.check_images(x, self.in_channels,
                               self.patch_embed.seq[0].c.weight)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = checkpointed_call(self.patch_embed, self.with_cp, x)
        outs = []
        last = self.out_indices[-1]
        for i in range(self.num_stages):
            stage = getattr(self, f'layer_{i}')
            x = stage(x)
            if self.out_type == 'featmap' and i in self.out_indices:
                outs.append(getattr(self, f'norm{i}')(getattr(
                    self, f'head{i}')(x)))
            if i == last:  # later stages would give nothing that is returned
                break
            x = checkpointed_call(stage.downsample, self.with_cp, x)
        if self.out_type == 'avg_featmap':
            outs.append(self.norm_head(x.mean(dim=(2, 3))))
        return tuple(outs)

    def switch_to_deploy(self) -> FcaFormer:
        """Fold every Conv-BN and layer scale; returns ``self``.

        A one-way conversion for inference: the same outputs in eval mode
        up to float rounding, and a second call does nothing. The folded
        weights are new tensors (nothing that other code holds changes),
        and it is all or nothing: if a fold fails, the model is unchanged.
        A deployed model refuses training mode and checkpoints of the
        undeployed layout, so load the weights first, then deploy (a copy,
        if the model is still to be trained).

        Raises:
            RuntimeError: If a layer to fold is parametrized
                (``torch.nn.utils.parametrize``): its weight is computed, so
                folding would drop the parametrization.
        """
        if self.deployed:
            return self
        fold_for_deploy(self)
        self.deployed = True
        return self

    def _load_from_state_dict(self, state_dict, prefix, *args,
                              **kwargs) -> None:
        if self.deployed:
            raise RuntimeError(
                'Cannot load weights into a deployed FcaFormer: '
                'switch_to_deploy() has folded its Conv-BN layers and layer '
                'scales, so checkpoints no longer fit it. Load the weights '
                'into a new model first, then call switch_to_deploy().')
        if is_deployed_state_dict(state_dict, prefix):
            raise RuntimeError(
                'These weights come from a deployed FcaFormer '
                '(switch_to_deploy() folded their Conv-BN layers and layer '
                'scales, e.g. "...local_conv.c.bias"), which cannot be '
                'unfolded: load the checkpoint saved before deploying.')
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        frozen: list[nn.Module] = [self.patch_embed]
        for i in range(self.frozen_stages + 1):
            frozen.append(getattr(self, f'layer_{i}').blocks)
            if i > 0:
                frozen.append(getattr(self, f'layer_{i - 1}').downsample)
        for module in frozen:
            module.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> FcaFormer:
        """Set the mode, keeping frozen stages (and BN if asked) in eval.

        Raises:
            RuntimeError: For training mode after :meth:`switch_to_deploy`.
        """
        if mode and self.deployed:
            raise RuntimeError(_DEPLOYED_TRAINING)
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    @property
    def num_decay_layers(self) -> int:
        """``num_layers`` of the official ``layer_wise_cab`` rule (6 for
        L2), see :func:`~fcaformer_mm.models.utils.layer_decay.
        num_decay_layers`."""
        return num_decay_layers(self.depths[2])

    def get_layer_depth(self, param_name: str,
                        prefix: str = '') -> tuple[int, int]:
        """Layer id of a parameter for layer-wise learning-rate decay.

        The official ``layer_wise_cab`` rule (:mod:`..utils.layer_decay`)
        with ``n`` = :attr:`num_decay_layers`; ids run to ``n + 1``, so
        mmpretrain's ``LearningRateDecayOptimWrapperConstructor`` scales the
        lr of id ``k`` by ``rate ** (n + 1 - k)`` as the official one does.

        Args:
            param_name (str): Name of the parameter.
            prefix (str): The backbone's prefix in it. Defaults to ''.

        Returns:
            Tuple[int, int]: The layer id and the number of layers.
        """
        n = self.num_decay_layers
        if not param_name.startswith(prefix):
            return n + 1, n + 2
        name = 'backbone.' + param_name[len(prefix):]
        return get_layer_id_layer_wise_cab(name, n), n + 2

    def init_weights(self) -> None:
        """The official initialisation, then a ``Pretrained`` checkpoint if
        ``init_cfg`` gives one (other entries are applied by mmengine)."""
        if self.is_init:
            print_log('init_weights of FcaFormer has been called more than '
                      'once.', logger='current', level=logging.WARNING)
            return
        pretrained, others = split_init_cfg(self.init_cfg)
        if pretrained is None and others:
            super().init_weights()
            return
        self.apply(official_init)
        if others:
            initialize(self, others)
        if pretrained is not None:
            load_pretrained(self, **pretrained)
        self._is_init = True
