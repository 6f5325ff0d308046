"""FcaFormer backbone for the OpenMMLab 2.0 codebases.

The module and parameter names follow the official implementation
(``hkzhang-git/FcaFormer``) exactly, so that its classification checkpoints
and its dense-prediction checkpoints load without any key conversion.
"""
from __future__ import annotations

import contextlib
import logging
import math
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import ClassVar

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.model.weight_init import initialize
from mmengine.runner.checkpoint import CheckpointLoader
from torch import nn

from fcaformer_mm.registry import MODELS

__all__ = ['FcaFormer']


# --------------------------------------------------------------------------
# Small building blocks. They are written here rather than taken from mmcv so
# that the core package depends on torch and mmengine only.
# --------------------------------------------------------------------------
def drop_path(x: torch.Tensor,
              drop_prob: float = 0.,
              training: bool = False) -> torch.Tensor:
    """Drop whole samples of a residual branch (stochastic depth).

    Args:
        x (torch.Tensor): The output of the residual branch.
        drop_prob (float): Probability to drop a sample. Defaults to 0.
        training (bool): Only drop in training mode. Defaults to False.

    Returns:
        torch.Tensor: ``x`` with some samples zeroed and the others scaled by
        ``1 / (1 - drop_prob)``.
    """
    if drop_prob == 0. or not training:
        return x
    keep_prob = 1 - drop_prob
    shape = (x.shape[0], ) + (1, ) * (x.ndim - 1)
    mask = x.new_empty(shape).bernoulli_(keep_prob)
    return x * mask.div_(keep_prob)


class DropPath(nn.Module):
    """Stochastic depth per sample, see :func:`drop_path`.

    Args:
        drop_prob (float): Probability to drop a sample. Defaults to 0.
    """

    def __init__(self, drop_prob: float = 0.) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f'drop_prob={self.drop_prob}'


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an ``(N, C, H, W)`` map.

    Subclassing :class:`torch.nn.LayerNorm` keeps the parameter names
    (``weight``, ``bias``) and lets ``init_cfg`` rules for ``'LayerNorm'``
    match it.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias,
                         self.eps)
        return x.permute(0, 3, 1, 2)


def _version_key(tensors: Sequence[torch.Tensor]) -> tuple:
    """What identifies the values of ``tensors`` for a cache of results.

    Identity, storage and version counter: loading a state dict, an
    optimiser step or any other in-place change, and ``.to()`` all change
    it. Holding the tensors keeps their memory from being reused, so a data
    pointer cannot come back with the same version by chance.
    """
    return tuple((t, t.data_ptr(), t._version, t.device) for t in tensors)


def _same_version_key(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(
        x[0] is y[0] and x[1:] == y[1:] for x, y in zip(a, b))


def _fold_bn(conv: nn.Conv2d,
             bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``conv`` (no bias) then ``bn`` in eval mode."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return (conv.weight * scale[:, None, None, None],
            bn.bias - bn.running_mean * scale)


class ConvBN(nn.Sequential):
    """Convolution without bias followed by BatchNorm2d.

    The children are named ``c`` and ``bn`` as in the official code. At
    eager inference (see :func:`_fast_inference`) the BatchNorm is folded
    into the convolution, with weights computed once and kept until a
    parameter or statistic changes, and a following GELU is fused into the
    convolution on the CPU (:func:`_conv_inference`).

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        kernel_size (int): Kernel size. Defaults to 1.
        stride (int): Stride. Defaults to 1.
        padding (int): Zero padding. Defaults to 0.
        groups (int): Convolution groups. Defaults to 1.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size: int = 1,
                 stride: int = 1,
                 padding: int = 0,
                 groups: int = 1) -> None:
        super().__init__(
            OrderedDict(
                c=nn.Conv2d(
                    in_channels,
                    out_channels,
                    kernel_size,
                    stride,
                    padding,
                    groups=groups,
                    bias=False),
                bn=nn.BatchNorm2d(out_channels)))
        self._folded: tuple | None = None

    def forward(self, x: torch.Tensor, gelu: bool = False) -> torch.Tensor:
        """``bn(c(x))``, then exact GELU if ``gelu``."""
        if _fast_inference(self):
            return _conv_inference(x, *self._inference_weights(), self.c,
                                   gelu)
        x = self.c(x)
        if hasattr(self, 'bn'):
            x = self.bn(x)
        return F.gelu(x) if gelu else x

    def _inference_weights(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not hasattr(self, 'bn'):
            return self.c.weight, self.c.bias
        bn = self.bn
        key = _version_key((self.c.weight, bn.weight, bn.bias,
                            bn.running_mean, bn.running_var))
        if self._folded is None or not _same_version_key(
                self._folded[0], key):
            self._folded = (key, *_fold_bn(self.c, bn))
        return self._folded[1:]

    def _apply(self, *args, **kwargs):
        self._folded = None
        return super()._apply(*args, **kwargs)

    def switch_to_deploy(self) -> None:
        """Fold ``bn`` (its running statistics) into ``c``, in place.

        ``c`` gets a bias and ``bn`` is removed; a second call does nothing.
        """
        if not hasattr(self, 'bn'):
            return
        conv, bn = self.c, self.bn
        fused = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=True,
            device=conv.weight.device,
            dtype=conv.weight.dtype)
        with torch.no_grad():
            weight, bias = _fold_bn(conv, bn)
            fused.weight.copy_(weight)
            fused.bias.copy_(bias)
        fused.weight.requires_grad_(conv.weight.requires_grad)
        fused.bias.requires_grad_(conv.weight.requires_grad)
        del self.bn
        self.c = fused
        self._folded = None


class Stem(BaseModule):
    """Two stride-2 Conv-BN layers with a GELU between them (stride 4).

    Args:
        in_channels (int): Input image channels.
        embed_dim (int): Output channels.
    """

    def __init__(self, in_channels: int, embed_dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            ConvBN(in_channels, embed_dim // 2, 3, 2, 1), nn.GELU(),
            ConvBN(embed_dim // 2, embed_dim, 3, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # ``seq[1]`` (GELU) is fused into ``seq[0]``; it stays in ``seq`` so
        # that ``seq.2`` keeps its official name.
        return self.seq[2](self.seq[0](x, gelu=True))


class Downsample(BaseModule):
    """Stride-2 transition between two stages.

    Conv-BN 1x1, GELU, depthwise Conv-BN 3x3/2, GELU, Conv-BN 1x1.

    Args:
        in_channels (int): Channels of the finer stage.
        out_channels (int): Channels of the coarser stage.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = ConvBN(in_channels, out_channels)
        self.conv2 = ConvBN(
            out_channels, out_channels, 3, 2, 1, groups=out_channels)
        self.conv3 = ConvBN(out_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x, gelu=True)
        x = self.conv2(x, gelu=True)
        return self.conv3(x)


class ConvNeXtBlock(BaseModule):
    """ConvNeXt block of stages 0 and 1.

    Args:
        dim (int): Channels.
        drop_path_rate (float): Stochastic depth rate. Defaults to 0.
        layer_scale_init_value (float): Initial layer scale; no ``gamma`` is
            created when it is not positive, as in the official code.
            Defaults to 1e-6.
    """

    def __init__(self,
                 dim: int,
                 drop_path_rate: float = 0.,
                 layer_scale_init_value: float = 1e-6) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        if layer_scale_init_value > 0:
            self.gamma = nn.Parameter(
                torch.full((dim, ), float(layer_scale_init_value)))
        else:
            self.gamma = None
        self.drop_path = DropPath(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.dwconv(x).permute(0, 2, 3, 1)
        if _fast_inference(self):
            x = self.norm(x)
            x = _mlp_inference(
                x.reshape(-1, x.shape[-1]), self.pwconv1, self.pwconv2,
                self.gamma).view(x.shape)
            return shortcut + x.permute(0, 3, 1, 2)
        x = self.pwconv2(self.act(self.pwconv1(self.norm(x))))
        if self.gamma is not None:
            x = self.gamma * x
        return shortcut + self.drop_path(x.permute(0, 3, 1, 2))

    def switch_to_deploy(self) -> None:
        """Fold ``gamma`` into ``pwconv2``."""
        if self.gamma is None:
            return
        with torch.no_grad():
            self.pwconv2.weight.mul_(self.gamma[:, None])
            self.pwconv2.bias.mul_(self.gamma)
        self.register_parameter('gamma', None)


class Mlp(BaseModule):
    """Feed-forward network of an FCA block.

    It carries a LayerNorm of its own (``norm``) in front of ``fc1``; the
    block applies ``norm2`` before calling it, so the tokens are normalised
    twice. Both norms hold trained weights and are kept.

    Args:
        dim (int): Input and output channels.
        hidden_dim (int): Hidden channels.
    """

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


def _relative_offset_index(window_size: int) -> torch.Tensor:
    """Index of the (|dy|, |dx|) offset of every pair of window positions.

    The official code numbers the offsets in their order of first
    appearance while scanning all pairs; the first query position (0, 0)
    already meets every offset, in row-major order, so that number is
    ``|dy| * window_size + |dx|``.
    """
    coords = torch.arange(window_size)
    ys, xs = torch.meshgrid(coords, coords, indexing='ij')
    ys, xs = ys.flatten(), xs.flatten()
    dy = (ys[:, None] - ys[None, :]).abs()
    dx = (xs[:, None] - xs[None, :]).abs()
    return dy * window_size + dx


def _is_tracing() -> bool:
    """Whether the forward is being compiled, traced or exported."""
    return (torch.compiler.is_compiling() or torch.jit.is_tracing()
            or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export())


#: Take the inference-only paths (eval mode, no autograd, eager: not
#: compiled or exported): MLPs in chunks, linear layers through oneDNN,
#: Conv-BN folded with GELU fused. False runs the same code as training (the
#: reference the fast paths are tested against).
FAST_INFERENCE = True

#: Rows (tokens) per chunk of the MLPs in eager inference; 0 runs them
#: whole. Small chunks keep the 4x-wide hidden activations in cache and out
#: of fresh (page-faulting) memory; see :func:`_mlp_inference`.
INFERENCE_MLP_CHUNK = 2048

#: Run float32 linear layers at CPU inference through oneDNN (the library
#: behind PyTorch's CPU convolutions) instead of ``F.linear``'s BLAS, with
#: GELU fused into ``fc1``. Same float32 arithmetic, another summation
#: order (differences ~1e-6); much faster where the BLAS is not tuned for
#: the CPU (about 2x on the AMD EPYC of our benchmarks).
ONEDNN_LINEAR = True


def _fast_inference(module: nn.Module) -> bool:
    """Whether ``module`` may take an inference-only path right now.

    Only in eager mode: compiled graphs get the plain operators, which
    inductor fuses itself (with ``torch._inductor.config.freezing`` it also
    folds the BatchNorms and packs the weights for oneDNN).
    """
    return FAST_INFERENCE and not (module.training or torch.is_grad_enabled()
                                   or _is_tracing())


def _define_onednn_linear():
    """``fcaformer_mm::onednn_linear``, or None where it cannot be made.

    A custom op around ``torch.ops.mkldnn._linear_pointwise``: opaque to
    ``torch.compile``, whose lowering of the raw op expects pre-packed
    weights. No autograd: inference only.
    """
    if not (hasattr(torch.library, 'custom_op')
            and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, '_linear_pointwise')):
        return None

    @torch.library.custom_op('fcaformer_mm::onednn_linear', mutates_args=())
    def onednn_linear(x: torch.Tensor, weight: torch.Tensor,
                      bias: torch.Tensor | None, gelu: bool) -> torch.Tensor:
        if gelu:
            return torch.ops.mkldnn._linear_pointwise(
                x, weight, bias, 'gelu', [], 'none')
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, 'none',
                                                  [], '')

    @onednn_linear.register_fake
    def _(x, weight, bias, gelu):
        return x.new_empty(*x.shape[:-1], weight.shape[0])

    return onednn_linear


_ONEDNN_LINEAR_OP = _define_onednn_linear()


def _define_onednn_conv_gelu():
    """``fcaformer_mm::onednn_conv_gelu`` (convolution then exact GELU in
    one oneDNN call), or None where it cannot be made. Eager inference
    only, like :func:`_define_onednn_linear`."""
    if not (hasattr(torch.library, 'custom_op')
            and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, '_convolution_pointwise')):
        return None

    @torch.library.custom_op(
        'fcaformer_mm::onednn_conv_gelu', mutates_args=())
    def onednn_conv_gelu(x: torch.Tensor, weight: torch.Tensor,
                         bias: torch.Tensor | None, padding: list[int],
                         stride: list[int], dilation: list[int],
                         groups: int) -> torch.Tensor:
        return torch.ops.mkldnn._convolution_pointwise(
            x, weight, bias, padding, stride, dilation, groups, 'gelu', [],
            'none')

    return onednn_conv_gelu


_ONEDNN_CONV_GELU_OP = _define_onednn_conv_gelu()


def _linear_flops(x_shape, weight_shape, *args, out_shape=None, **kwargs):
    return 2 * math.prod(x_shape[:-1]) * weight_shape[0] * weight_shape[1]


def _conv_flops(x_shape, weight_shape, *args, out_shape=None, **kwargs):
    from torch.utils.flop_counter import conv_flop_count
    return conv_flop_count(x_shape, weight_shape, out_shape, transposed=False)


def _register_flops() -> None:
    """Tell ``torch.utils.flop_counter`` what our custom ops compute.

    ``FlopCounterMode`` counts nothing for an op without a formula, and our
    ops are opaque to it (2 FLOPs per multiply-add, as for aten's ops).
    """
    try:
        from torch.utils.flop_counter import (
            flop_registry,
            register_flop_formula,
        )
    except ImportError:  # torch < 2.2: nothing to register with
        return
    for op, name, formula in (
        (_ONEDNN_LINEAR_OP, 'onednn_linear', _linear_flops),
        (_ONEDNN_CONV_GELU_OP, 'onednn_conv_gelu', _conv_flops),
    ):
        if op is not None:
            packet = getattr(torch.ops.fcaformer_mm, name)
            if packet not in flop_registry:
                register_flop_formula(packet)(formula)


_register_flops()


def _conv_inference(x: torch.Tensor, weight: torch.Tensor,
                    bias: torch.Tensor | None, conv: nn.Conv2d,
                    gelu: bool) -> torch.Tensor:
    """``conv`` with the given weights, then exact GELU if ``gelu``.

    A GELU is fused into the convolution through oneDNN for float32 CPU
    tensors outside of autocast (one pass instead of a convolution and an
    elementwise pass over a fresh tensor).
    """
    if (gelu and _ONEDNN_CONV_GELU_OP is not None
            and x.device.type == 'cpu' and x.dtype == torch.float32
            and weight.dtype == torch.float32 and not _autocast_on('cpu')):
        return _ONEDNN_CONV_GELU_OP(x, weight.contiguous(), bias,
                                    list(conv.padding), list(conv.stride),
                                    list(conv.dilation), conv.groups)
    x = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation,
                 conv.groups)
    return F.gelu(x) if gelu else x


def _autocast_on(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4
        return device_type == 'cpu' and torch.is_autocast_cpu_enabled()


def _linear(x: torch.Tensor,
            weight: torch.Tensor,
            bias: torch.Tensor | None = None,
            gelu: bool = False) -> torch.Tensor:
    """``F.linear`` (then exact GELU if ``gelu``), through oneDNN when it may.

    oneDNN is used for float32 CPU tensors without autograd, in eager mode
    outside of autocast, when :data:`FAST_INFERENCE` and
    :data:`ONEDNN_LINEAR` are set.
    """
    if (FAST_INFERENCE and ONEDNN_LINEAR and _ONEDNN_LINEAR_OP is not None
            and x.device.type == 'cpu' and x.dtype == torch.float32
            and weight.dtype == torch.float32
            and (bias is None or bias.dtype == torch.float32)
            and not torch.is_grad_enabled() and not _autocast_on('cpu')
            and not _is_tracing()):
        return _ONEDNN_LINEAR_OP(x.contiguous(), weight.contiguous(),
                                 bias, gelu)
    x = F.linear(x, weight, bias)
    return F.gelu(x) if gelu else x


def _call_linear(linear: nn.Linear, x: torch.Tensor,
                 fast: bool) -> torch.Tensor:
    """``linear(x)``: through :func:`_linear` on the fast paths, else the
    module itself, so that module hooks (e.g. the nn-module MAC counter of
    get_flops) see it."""
    return _linear(x, linear.weight, linear.bias) if fast else linear(x)


def _mlp_inference(x: torch.Tensor,
                   fc1: nn.Linear,
                   fc2: nn.Linear,
                   gamma: torch.Tensor | None,
                   norm: nn.LayerNorm | None = None) -> torch.Tensor:
    """``gamma * fc2(gelu(fc1(norm(x))))`` over ``(M, C)`` rows.

    Eager inference only (no autograd). ``gamma`` is folded into ``fc2``;
    the rows go in chunks of at most :data:`INFERENCE_MLP_CHUNK`
    into slices of the output, so the ``(M, 4C)`` hidden tensor never
    exists whole. The numbers are those of the plain computation up to
    float rounding.
    """
    weight, bias = fc2.weight, fc2.bias
    if gamma is not None:
        # Under autocast, F.linear casts the folded weights.
        weight = weight * gamma[:, None]
        bias = bias * gamma

    def run(part: torch.Tensor) -> torch.Tensor:
        if norm is not None:
            part = norm(part)
        part = _linear(part, fc1.weight, fc1.bias, gelu=True)
        return _linear(part, weight, bias)

    rows = x.shape[0]
    chunk = INFERENCE_MLP_CHUNK
    if chunk <= 0 or rows <= chunk:
        return run(x)
    out = None
    for start in range(0, rows, chunk):
        part = run(x[start:start + chunk])
        if out is None:
            out = part.new_empty(rows, part.shape[1])
        out[start:start + chunk] = part
    return out


def _is_exporting() -> bool:
    """Whether the forward is being traced by TorchScript (ONNX export)."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


_WINDOW_INDEX_CACHE: OrderedDict = OrderedDict()
_WINDOW_INDEX_CACHE_SIZE = 32


def _compute_window_indices(batch: int, height: int, width: int, ws: int,
                            top: int, left: int,
                            device: torch.device) -> tuple[torch.Tensor, ...]:
    rows, cols = -(-(height + top) // ws), -(-(width + left) // ws)
    ys = torch.arange(rows * ws, device=device) - top
    xs = torch.arange(cols * ws, device=device) - left
    valid = (((ys >= 0) & (ys < height))[:, None]
             & ((xs >= 0) & (xs < width))[None, :])
    position = ys[:, None] * width + xs[None, :]
    offsets = torch.arange(batch, device=device)[:, None, None] * (
        height * width)
    sentinel = batch * height * width
    index = torch.where(valid[None], position[None] + offsets, sentinel)
    to_windows = index.reshape(batch, rows, ws, cols, ws).permute(
        0, 1, 3, 2, 4).reshape(-1)
    to_map = torch.empty(
        sentinel + 1, dtype=to_windows.dtype, device=device)
    to_map[to_windows] = torch.arange(to_windows.numel(), device=device)
    return to_windows, to_map[:sentinel]


def _window_indices(batch: int, height: int, width: int, ws: int, top: int,
                    left: int,
                    device: torch.device) -> tuple[torch.Tensor, ...]:
    """Row indices between a map and its zero-padded windows.

    For a ``(B, H, W)`` map padded by ``top`` rows and ``left`` columns
    (and at the other sides up to whole ``ws`` windows), returns:

    - ``to_windows`` ``(num_windows * ws * ws, )``: for each position of the
      windows (row-major windows of row-major positions, image by image),
      its row in the flattened ``(B * H * W, C)`` map, or ``B * H * W`` for a
      padded position (a zero row appended to the map);
    - ``to_map`` ``(B * H * W, )``: for each map position, its row in the
      flattened windows.

    So padding and window partition are one ``index_select``, and so is
    cropping back. Kept for the last few sizes outside of compilation.
    """
    key = (batch, height, width, ws, top, left, device)
    if torch.compiler.is_compiling():
        return _compute_window_indices(*key)
    found = _WINDOW_INDEX_CACHE.get(key)
    if found is None:
        found = _compute_window_indices(*key)
        _WINDOW_INDEX_CACHE[key] = found
        while len(_WINDOW_INDEX_CACHE) > _WINDOW_INDEX_CACHE_SIZE:
            _WINDOW_INDEX_CACHE.popitem(last=False)
    return found


def _partition(x: torch.Tensor, rows: int, cols: int,
               ws: int) -> torch.Tensor:
    """``(B, rows*ws, cols*ws, C)`` -> ``(B*rows*cols, ws*ws, C)`` windows."""
    batch, channels = x.shape[0], x.shape[-1]
    return x.reshape(batch, rows, ws, cols, ws, channels).permute(
        0, 1, 3, 2, 4, 5).reshape(batch * rows * cols, ws * ws, channels)


class FcaBlock(BaseModule):
    """Fused-cross-attention block of stages 2 and 3.

    The block takes the stage's map of real positions, pads it to whole
    windows, attends inside every window and crops back, computing exactly
    what the official block computes on padded windows, with less work:

    - the MLP runs on the real positions only: its outputs at padded
      positions are cropped away by the official code;
    - ``norm1`` and ``qkv`` run on the real positions and on one zero row,
      which stands for every padded position; padding, window partition
      and cropping back are each one ``index_select``
      (see :func:`_window_indices`), the explicit pad and partition being
      kept for ONNX export;
    - in eager inference the MLPs run in chunks of rows
      (:data:`INFERENCE_MLP_CHUNK`) and float32 linear layers on the CPU
      through oneDNN with GELU fused (:data:`ONEDNN_LINEAR`); compiled
      graphs get the plain operators;
    - attention goes through :func:`torch.nn.functional.
      scaled_dot_product_attention` with the position bias and
      ``s_token_bias`` as an additive mask (see :meth:`attention_mask`);
    - the token maps stay channels-last, so the windows are views for the
      depthwise convolutions.

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

    #: Use ``scaled_dot_product_attention``; False computes the attention
    #: with explicit matrix products and softmax (same numbers).
    fused_attention: bool = True

    def __init__(self,
                 dim: int,
                 window_size: int,
                 num_heads: int,
                 block_index: int,
                 make_cross_tokens: bool,
                 mlp_ratio: float = 4.,
                 drop_path_rate: float = 0.,
                 layer_scale_init_value: float = 1e-6) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f'The channels ({dim}) must be divisible by the '
                             f'number of heads ({num_heads}).')
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        self.scale = (dim // num_heads)**-0.5

        self.gamma_1 = nn.Parameter(
            torch.full((dim, ), float(layer_scale_init_value)))
        self.gamma_2 = nn.Parameter(
            torch.full((dim, ), float(layer_scale_init_value)))

        # Token-merging conv (TME): one cross token per 4x4 patch of window.
        if make_cross_tokens:
            self.dw_conv = nn.Conv2d(
                dim, dim, 7, stride=4, padding=3, groups=dim, bias=False)
        else:
            self.dw_conv = None
        tokens_per_block = math.ceil(window_size / 4)**2
        self.num_cross = block_index * tokens_per_block
        if self.num_cross > 0:
            self.s_token_bias = nn.Parameter(
                torch.zeros(1, num_heads, 1, self.num_cross))
            self.s_norm = nn.LayerNorm(dim)
            self.s_scale_factors = nn.Parameter(
                torch.ones(1, self.num_cross, 1))

        self.norm1 = nn.LayerNorm(dim)
        self.attention_biases = nn.Parameter(
            torch.zeros(num_heads, window_size * window_size))
        self.register_buffer(
            'attention_bias_idxs',
            _relative_offset_index(window_size),
            persistent=False)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

        self.local_conv = ConvBN(dim, dim, 3, 1, 1, groups=dim)

        self.drop_path = DropPath(drop_path_rate)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self._mask_cache: tuple | None = None

    # ------------------------------------------------------------ the mask
    def _mask_key(self, dtype: torch.dtype) -> tuple:
        params = [self.attention_biases, self.attention_bias_idxs]
        if self.num_cross > 0:
            params.append(self.s_token_bias)
        return dtype, _version_key(params)

    def attention_mask(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The additive attention mask ``(1, heads, N, N + num_cross)``.

        It holds the relative position bias gathered from
        ``attention_biases`` for the window keys and ``s_token_bias`` for
        the cross keys. In eval mode without autograd it is computed once
        and kept, keyed on the parameters' identity, storage and version
        counter: loading a state dict, an optimiser step or any other
        in-place change, ``.to()``, and switching to train mode all make it
        be computed again.

        Args:
            dtype (torch.dtype, optional): dtype of the mask. Defaults to
                that of ``attention_biases``.
        """
        dtype = dtype or self.attention_biases.dtype
        cacheable = not (self.training or torch.is_grad_enabled()
                         or _is_tracing())
        if cacheable:
            key = self._mask_key(dtype)
            cached = self._mask_cache
            if (cached is not None and cached[0][0] == key[0]
                    and _same_version_key(cached[0][1], key[1])):
                return cached[1]
        tokens = self.window_size**2
        mask = self.attention_biases[:, self.attention_bias_idxs]
        if self.num_cross > 0:
            mask = torch.cat(
                (mask, self.s_token_bias[0].expand(-1, tokens, -1)), dim=-1)
        mask = mask.unsqueeze(0).to(dtype)
        if cacheable:
            self._mask_cache = (key, mask)
        else:
            self._mask_cache = None
        return mask

    def train(self, mode: bool = True) -> FcaBlock:
        if mode:
            self._mask_cache = None
        return super().train(mode)

    def _apply(self, *args, **kwargs):
        self._mask_cache = None
        return super()._apply(*args, **kwargs)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._mask_cache = None
        super()._load_from_state_dict(*args, **kwargs)

    # ------------------------------------------------------------- forward
    def _attention(self, qkv: torch.Tensor, cross: torch.Tensor | None,
                   num_windows: int, fast: bool) -> torch.Tensor:
        """Attention of window tokens, given their ``qkv`` projection
        (``fast``: whether the inference-only paths are taken)."""
        dim = self.dim
        heads, head_dim = self.num_heads, dim // self.num_heads
        tokens = self.window_size**2
        q, k, v = qkv.reshape(num_windows, tokens, 3, heads,
                              head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if self.num_cross > 0:
            if cross is None or cross.shape[1] != self.num_cross:
                got = None if cross is None else tuple(cross.shape)
                raise ValueError(f'Expected {self.num_cross} cross tokens '
                                 f'per window, got {got}.')
            cross = self.s_norm(cross * self.s_scale_factors)
            # Cross tokens serve as keys and values only, so the query third
            # of the shared ``qkv`` projection is not computed for them.
            kv = _linear(cross, self.qkv.weight[dim:], self.qkv.bias[dim:])
            k_s, v_s = kv.reshape(num_windows, self.num_cross, 2, heads,
                                  head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            # One softmax spans the window's keys and the cross keys.
            k = torch.cat((k, k_s), dim=2)
            v = torch.cat((v, v_s), dim=2)
        mask = self.attention_mask(q.dtype)
        if self.fused_attention:
            x = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, scale=self.scale)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1) + mask
            x = attn.softmax(dim=-1) @ v
        x = x.transpose(1, 2).reshape(num_windows, tokens, dim)
        return _call_linear(self.proj, x, fast)

    def forward(
        self,
        x: torch.Tensor,
        cross: torch.Tensor | None = None,
        pad_top_left: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run the block on a channels-last map.

        Args:
            x (torch.Tensor): ``(B, H, W, C)`` map of real positions.
            cross (torch.Tensor, optional): ``(num_windows, num_cross, C)``
                cross tokens of the earlier blocks of the stage, windows in
                row-major order per image.
            pad_top_left (bool): Pad to whole windows at the top and left
                (True) or at the bottom and right. Defaults to True.

        Returns:
            tuple: The new ``(B, H, W, C)`` map, and this block's cross
            tokens ``(num_windows, ceil(window_size / 4)**2, C)`` or None.
        """
        batch, height, width, dim = x.shape
        ws = self.window_size
        pad_h, pad_w = (-height) % ws, (-width) % ws
        top, left = (pad_h, pad_w) if pad_top_left else (0, 0)
        rows, cols = (height + pad_h) // ws, (width + pad_w) // ws
        num_windows = batch * rows * cols
        exporting = _is_exporting()
        fast = _fast_inference(self)
        if exporting:
            # A traced graph must pad whatever the example size: explicit
            # pad and partition, with sizes the tracer records.
            pads = (0, 0, left, pad_w - left, top, pad_h - top)
            shortcut = _partition(F.pad(x, pads), rows, cols, ws)
            qkv = self.qkv(self.norm1(shortcut))
        else:
            # A zero-padded position has ``norm1(0) = norm1.bias`` and the
            # same ``qkv`` everywhere: project the real positions and one
            # zero row, then pad and partition both by one index_select.
            to_windows, to_map = _window_indices(batch, height, width, ws,
                                                 top, left, x.device)
            flat = x.reshape(-1, dim)
            zero = flat.new_zeros(1, dim)
            shortcut = torch.cat((flat, zero)).index_select(0, to_windows)
            shortcut = shortcut.view(num_windows, ws * ws, dim)
            qkv = _call_linear(
                self.qkv, torch.cat((self.norm1(flat), self.norm1(zero))),
                fast)
            qkv = qkv.index_select(0, to_windows).view(
                num_windows, ws * ws, 3 * dim)
        attn = self._attention(qkv, cross, num_windows, fast)
        if self.gamma_1 is not None:
            attn = self.gamma_1 * attn
        x = shortcut + self.drop_path(attn)

        # (nW, ws*ws, C) -> (nW, C, ws, ws): a view in channels-last layout.
        x = x.reshape(num_windows, ws, ws, dim).permute(0, 3, 1, 2)
        new_cross = None
        if self.dw_conv is not None:
            new_cross = self.dw_conv(x).flatten(2).transpose(1, 2)
        # The official block has no shortcut around ``local_conv``.
        x = self.local_conv(x).permute(0, 2, 3, 1)
        if exporting:
            x = x.reshape(batch, rows, cols, ws, ws, dim).permute(
                0, 1, 3, 2, 4, 5).reshape(batch, rows * ws, cols * ws, dim)
            x = x[:, top:top + height, left:left + width]
        else:
            x = x.reshape(-1, dim).index_select(0, to_map).view(
                batch, height, width, dim)

        if fast:
            mlp = self.norm2(x)
            mlp = _mlp_inference(
                mlp.reshape(-1, dim), self.mlp.fc1, self.mlp.fc2,
                self.gamma_2, self.mlp.norm).view(mlp.shape)
            return x + mlp, new_cross
        mlp = self.mlp(self.norm2(x))
        if self.gamma_2 is not None:
            mlp = self.gamma_2 * mlp
        if self.drop_path.drop_prob > 0. and self.training:
            # One draw per window, as the official code drops on windows.
            keep = 1 - self.drop_path.drop_prob
            mask = x.new_empty(batch, rows, 1, cols, 1, 1).bernoulli_(keep)
            mask = mask.div_(keep).expand(-1, -1, ws, -1, ws, -1).reshape(
                batch, rows * ws, cols * ws, 1)
            mlp = mlp * mask[:, top:top + height, left:left + width]
        return x + mlp, new_cross

    def switch_to_deploy(self) -> None:
        """Fold ``gamma_1`` and ``gamma_2`` into ``proj`` and ``mlp.fc2``."""
        for gamma, linear, name in ((self.gamma_1, self.proj, 'gamma_1'),
                                    (self.gamma_2, self.mlp.fc2, 'gamma_2')):
            if gamma is None:
                continue
            with torch.no_grad():
                linear.weight.mul_(gamma[:, None])
                linear.bias.mul_(gamma)
            self.register_parameter(name, None)




@contextlib.contextmanager
def plain_code_path() -> Iterator[None]:
    """Run FcaFormer's inference on the plain code path of training.

    Within it, :data:`FAST_INFERENCE` is off: every layer is called as its
    module (no oneDNN custom ops, no folded Conv-BN, no MLP chunks), so that
    module hooks, e.g. MAC counters, see each layer. The numbers are the
    same up to float rounding.
    """
    global FAST_INFERENCE
    saved, FAST_INFERENCE = FAST_INFERENCE, False
    try:
        yield
    finally:
        FAST_INFERENCE = saved


@contextlib.contextmanager
def _keep_bn_statistics(module: nn.Module) -> Iterator[None]:
    """Undo what a forward pass does to BatchNorm running statistics.

    Activation checkpointing runs a block's forward a second time during
    the backward pass; without this, the BatchNorm layers of the block
    (``local_conv.bn``) would count every training batch twice. Outputs do
    not change: in training mode BatchNorm normalises with batch statistics.
    """
    buffers = [
        buf for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        for buf in (m.running_mean, m.running_var, m.num_batches_tracked)
        if buf is not None
    ]
    saved = [buf.clone() for buf in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, value in zip(buffers, saved):
                buf.copy_(value)


def _run(module: nn.Module, with_cp: bool, *args):
    """Call ``module``, through activation checkpointing if asked."""
    if with_cp and torch.is_grad_enabled():
        return cp.checkpoint(
            module,
            *args,
            use_reentrant=False,
            context_fn=lambda:
            (contextlib.nullcontext(), _keep_bn_statistics(module)))
    return module(*args)


class ConvStage(BaseModule):
    """Stage of ConvNeXt blocks (``layer_0``, ``layer_1``).

    Args:
        dim (int): Channels.
        out_dim (int): Channels after ``downsample``.
        drop_path_rates (Sequence[float]): One rate per block.
        layer_scale_init_value (float): Initial layer scale.
        with_cp (bool): Checkpoint each block. Defaults to False.
    """

    def __init__(self,
                 dim: int,
                 out_dim: int,
                 drop_path_rates: Sequence[float],
                 layer_scale_init_value: float,
                 with_cp: bool = False) -> None:
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
            x = _run(block, self.with_cp, x)
        return x


class FcaStage(BaseModule):
    """Stage of FCA blocks (``layer_2``, ``layer_3``) on padded windows.

    As in the official dense model, the map is zero-padded to whole windows
    before every block and cropped back after it. Blocks 0, 2, 4, ... pad at
    the top and left, blocks 1, 3, 5, ... at the bottom and right, so that
    successive blocks see differently placed windows. The cross tokens of a
    window are handed on by window index.

    Args:
        dim (int): Channels.
        out_dim (int): Channels after ``downsample``.
        window_size (int): Side of the square attention window.
        num_heads (int): Attention heads.
        drop_path_rates (Sequence[float]): One rate per block.
        layer_scale_init_value (float): Initial layer scale.
        with_downsample (bool): Whether the stage has a ``downsample``.
        with_cp (bool): Checkpoint each block. Defaults to False.
    """

    def __init__(self,
                 dim: int,
                 out_dim: int,
                 window_size: int,
                 num_heads: int,
                 drop_path_rates: Sequence[float],
                 layer_scale_init_value: float,
                 with_downsample: bool,
                 with_cp: bool = False) -> None:
        super().__init__()
        self.window_size = window_size
        self.with_cp = with_cp
        depth = len(drop_path_rates)
        self.blocks = nn.ModuleList([
            FcaBlock(
                dim,
                window_size,
                num_heads,
                block_index=i,
                make_cross_tokens=i < depth - 1,
                drop_path_rate=rate,
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
            x, new_cross = _run(block, self.with_cp, x, cross, i % 2 == 0)
            if new_cross is not None:
                cross_tokens.append(new_cross)
        return x.permute(0, 3, 1, 2)


# --------------------------------------------------------------------------
# The backbone.
# --------------------------------------------------------------------------
_ARCH_KEYS = ('embed_dims', 'depths', 'num_heads')
_DENSE_WIDTHS_L2 = (96, 192, 384, 768)


def _official_init(module: nn.Module) -> None:
    """The official initialisation of one module (``apply`` target)."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.trunc_normal_(module.weight, std=.02, a=-2., b=2.)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
        if module.weight is not None:
            nn.init.ones_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


@MODELS.register_module()
class FcaFormer(BaseModule):
    """FcaFormer backbone.

    A PyTorch implementation of `FcaFormer: Forward Cross Attention in Hybrid
    Vision Transformer <https://arxiv.org/abs/2211.07198>`_ (ICCV 2023),
    written after the `official code <https://github.com/hkzhang-git/FcaFormer>`_
    and keeping its parameter names, so that official checkpoints load as
    they are.

    Stages 0 and 1 are ConvNeXt blocks; stages 2 and 3 are FCA blocks that
    attend inside windows of ``window_sizes`` tokens (the map sizes that
    224x224 images give, so classification weights fit unchanged) and to the
    cross tokens of the earlier blocks of their stage. Inputs of any size
    work: the map is padded to whole windows before every FCA block and
    cropped after it, as in the official dense model ``FcaFormer_SH_512``.
    For 224x224 inputs this is exactly the official classifier.

    Block ``i`` of a stage attends to the cross tokens of all blocks before
    it, as in the official dense model; the official classifier would keep
    only those of the last 12 blocks, which no preset reaches (at most 12
    blocks per stage), so both agree on every preset.

    Args:
        arch (str | dict): ``'l1'``, ``'l2'``, ``'l3'`` or ``'l4'`` (also
            ``'fcaformer-l2'`` etc.), or a dict with the keys:

            - embed_dims (Sequence[int]): Widths of the four stages.
            - depths (Sequence[int]): Blocks in each of the four stages.
            - num_heads (Sequence[int]): Heads of stages 2 and 3 (a
              4-sequence as in the official code is accepted; its first two
              entries are ignored).

            Defaults to ``'l2'``.
        in_channels (int): Input image channels. Defaults to 3.
        out_type (str): ``'featmap'`` for dense prediction: each output
            stage goes through a 1x1 conv ``head{i}`` and a channels-first
            LayerNorm ``norm{i}`` and the backbone returns a tuple of
            ``(B, C_i, H_i, W_i)`` maps. ``'avg_featmap'`` for
            classification: the last stage is averaged over its positions
            and normalised by ``norm_head``; the backbone returns a 1-tuple
            ``((B, embed_dims[3]), )`` for mmpretrain's ``ImageClassifier``.
            Defaults to ``'featmap'``.
        out_indices (int | Sequence[int], optional): Output stages, negative
            values counting from the end. Only used with ``'featmap'``.
            Defaults to None: all four stages for ``'featmap'``, the last
            one for ``'avg_featmap'`` (the only allowed value there).
        out_channels (Sequence[int], optional): Widths of the four dense
            outputs (``head{i}``). Defaults to None: ``(96, 192, 384, 768)``
            for L2 as in the official dense configs, the stage widths for
            the other archs.
        window_sizes (Sequence[int]): Attention window sides of stages 2 and
            3. Defaults to ``(14, 7)``.
        drop_path_rate (float): Stochastic depth rate, linear from 0 over
            all blocks. Defaults to 0.
        layer_scale_init_value (float): Initial layer scale of all blocks
            (the official classifier always uses 1e-6, the official dense
            configs 1.0). Defaults to 1e-6.
        frozen_stages (int): -1 freezes nothing, 0 the stem, ``i`` the stem
            and stages 0..i together with the ``downsample`` layers that feed
            stages 1..i. The dense output layers ``head{i}``/``norm{i}`` are
            never frozen: classification checkpoints do not hold them.
            Defaults to -1.
        norm_eval (bool): Keep the BatchNorm layers in eval mode while
            training (frozen statistics). Defaults to False.
        with_cp (bool): Checkpoint the activations of every block to save
            memory at the cost of speed (needs torch >= 2.1). BatchNorm
            statistics are updated once per batch, as without it.
            Defaults to False.
        channels_last (bool): Run the stages on channels-last maps (the
            outputs are then channels-last too); the numbers are the same,
            the depthwise convolutions and the FCA blocks are faster.
            Defaults to True.
        init_cfg (dict | list[dict], optional): Initialisation config. None
            gives the official initialisation (trunc-normal std 0.02 for
            Conv and Linear weights, zero biases, norms 1/0). A
            ``dict(type='Pretrained', checkpoint=..., prefix=...)`` loads:

            - official classification checkpoints (``model`` entry, or the
              entry named by the extra key ``state_dict_key``, e.g.
              ``state_dict_key='model_ema'``);
            - OpenMMLab checkpoints (``state_dict`` entry; pass
              ``prefix='backbone.'``, which is also assumed when no key
              matches the model without it);
            - plain state dicts.

            Missing and unexpected keys are logged; shape mismatches raise.
            Defaults to None.

    Example:
        >>> import torch
        >>> from fcaformer_mm.models import FcaFormer
        >>> model = FcaFormer(arch='l2').eval()
        >>> outs = model(torch.rand(1, 3, 224, 224))
        >>> for out in outs:
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
        **dict.fromkeys(
            ['l1', 'fcaformer-l1'],
            MappingProxyType({
                'embed_dims': (64, 128, 192, 320),
                'depths': (2, 2, 6, 2),
                'num_heads': (6, 10),
            })),
        **dict.fromkeys(
            ['l2', 'fcaformer-l2'],
            MappingProxyType({
                'embed_dims': (96, 192, 320, 480),
                'depths': (2, 2, 7, 2),
                'num_heads': (10, 15),
            })),
        **dict.fromkeys(
            ['l3', 'fcaformer-l3'],
            MappingProxyType({
                'embed_dims': (96, 192, 320, 512),
                'depths': (3, 6, 12, 3),
                'num_heads': (10, 16),
            })),
        **dict.fromkeys(
            ['l4', 'fcaformer-l4'],
            MappingProxyType({
                'embed_dims': (128, 256, 512, 768),
                'depths': (3, 6, 12, 3),
                'num_heads': (16, 24),
            })),
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
        arch_name = arch.lower() if isinstance(arch, str) else None
        arch = self._parse_arch(arch)
        self.embed_dims: list[int] = list(arch['embed_dims'])
        self.depths: list[int] = list(arch['depths'])
        self.num_heads: list[int] = list(arch['num_heads'])[-2:]
        self.in_channels = in_channels

        if out_type not in self.out_types:
            raise ValueError(f'Unsupported out_type {out_type!r}, please '
                             f'choose from {self.out_types}.')
        self.out_type = out_type
        self.out_indices = self._parse_out_indices(out_indices)

        if out_channels is None:
            is_l2 = arch_name in ('l2', 'fcaformer-l2')
            out_channels = _DENSE_WIDTHS_L2 if is_l2 else self.embed_dims
        if len(out_channels) != self.num_stages:
            raise ValueError('out_channels must give one width per stage '
                             f'(4), got {list(out_channels)}.')
        self.out_channels: list[int] = list(out_channels)

        if len(window_sizes) != 2 or min(window_sizes) < 1:
            raise ValueError('window_sizes must be two positive ints (stages '
                             f'2 and 3), got {window_sizes}.')
        self.window_sizes: list[int] = list(window_sizes)

        if not -1 <= frozen_stages < self.num_stages:
            raise ValueError('frozen_stages must be in [-1, 3], got '
                             f'{frozen_stages}.')
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self.channels_last = channels_last
        self.deployed = False

        rates = torch.linspace(
            0, drop_path_rate, sum(self.depths), device='cpu').tolist()
        stage_rates, start = [], 0
        for depth in self.depths:
            stage_rates.append(rates[start:start + depth])
            start += depth

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
                FcaStage(
                    dims[i],
                    dims[min(i + 1, 3)],
                    self.window_sizes[i - 2],
                    self.num_heads[i - 2],
                    stage_rates[i],
                    layer_scale_init_value,
                    with_downsample=i < 3,
                    with_cp=with_cp))

        if out_type == 'featmap':
            for i in self.out_indices:
                self.add_module(
                    f'head{i}',
                    nn.Conv2d(dims[i], self.out_channels[i], 1, bias=False))
                self.add_module(f'norm{i}',
                                LayerNorm2d(self.out_channels[i], eps=1e-6))
        else:
            self.norm_head = nn.LayerNorm(dims[3])

        self._freeze_stages()

    # ------------------------------------------------------------ arguments
    def _parse_arch(self, arch: str | dict) -> dict:
        if isinstance(arch, str):
            key = arch.lower()
            if key not in self.arch_zoo:
                raise ValueError(
                    f'Unavailable arch {arch!r}, please choose from '
                    f'({", ".join(sorted(self.arch_zoo))}) or pass a dict.')
            return self.arch_zoo[key]
        if not isinstance(arch, Mapping):
            # ValueError, not TypeError: callers catch one error for any
            # unusable arch, as with mmpretrain's backbones.
            raise ValueError(  # noqa: TRY004
                f'Unavailable arch {arch!r}, please choose from '
                f'({", ".join(sorted(self.arch_zoo))}) or pass a dict.')
        missing = [key for key in _ARCH_KEYS if key not in arch]
        if missing:
            raise ValueError(f'The arch dict misses the keys {missing}; it '
                             f'needs {list(_ARCH_KEYS)}.')
        if len(arch['embed_dims']) != 4 or len(arch['depths']) != 4:
            raise ValueError('arch "embed_dims" and "depths" must have 4 '
                             f'entries, got {list(arch["embed_dims"])} and '
                             f'{list(arch["depths"])}.')
        if len(arch['num_heads']) not in (2, 4):
            raise ValueError('arch "num_heads" must give the heads of stages '
                             f'2 and 3, got {list(arch["num_heads"])}.')
        if min(arch['depths']) < 1:
            raise ValueError('Every stage needs at least one block, got '
                             f'depths {list(arch["depths"])}.')
        return dict(arch)

    def _parse_out_indices(
            self, out_indices: int | Sequence[int] | None
    ) -> tuple[int, ...]:
        last = self.num_stages - 1
        if out_indices is None:
            return (last, ) if self.out_type == 'avg_featmap' else tuple(
                range(self.num_stages))
        if isinstance(out_indices, int):
            out_indices = [out_indices]
        if not isinstance(out_indices, Sequence) or not out_indices:
            raise ValueError('out_indices must be an int or a non-empty '
                             f'sequence, got {out_indices!r}.')
        normalised = []
        for index in out_indices:
            value = index + self.num_stages if index < 0 else index
            if not 0 <= value <= last:
                raise ValueError(f'Invalid out_indices {index}: there are '
                                 f'{self.num_stages} stages.')
            normalised.append(value)
        normalised = tuple(sorted(set(normalised)))
        if self.out_type == 'avg_featmap' and normalised != (last, ):
            raise ValueError("out_type='avg_featmap' outputs the last stage "
                             f'only; got out_indices={out_indices!r}.')
        return normalised

    # -------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Forward an image batch.

        Args:
            x (torch.Tensor): ``(B, in_channels, H, W)`` images, any size.

        Returns:
            tuple[torch.Tensor]: ``(B, out_channels[i], ceil(H / 2**(i+2)),
            ...)`` maps for each ``i`` in ``out_indices`` (``'featmap'``), or
            the 1-tuple ``((B, embed_dims[3]), )`` (``'avg_featmap'``).
        """
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f'FcaFormer expects (B, {self.in_channels}, H, W) images, got '
                f'a tensor of shape {tuple(x.shape)}.')
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.patch_embed(x)
        outs = []
        last = self.out_indices[-1]
        for i in range(self.num_stages):
            stage = getattr(self, f'layer_{i}')
            x = stage(x)
            if self.out_type == 'featmap' and i in self.out_indices:
                head = getattr(self, f'head{i}')
                norm = getattr(self, f'norm{i}')
                outs.append(norm(head(x)))
            if i == last:
                # Later stages would produce nothing that is returned.
                break
            x = stage.downsample(x)
        if self.out_type == 'avg_featmap':
            outs.append(self.norm_head(x.mean(dim=(2, 3))))
        return tuple(outs)

    def switch_to_deploy(self) -> FcaFormer:
        """Fuse the model for inference, in place; returns ``self``.

        Every Conv-BN is folded into one convolution (with the BatchNorm
        running statistics), and the layer scales ``gamma``, ``gamma_1``,
        ``gamma_2`` into the linear layer before them. The outputs in eval
        mode stay the same (within float rounding); the state dict then has
        the fused layout (``*.c.bias``, no ``*.bn.*``, no ``gamma*``), so
        load checkpoints before the switch. Training a deployed model is
        not supported. Calling it again does nothing.
        """
        if self.deployed:
            return self
        for module in list(self.modules()):
            if module is not self and hasattr(module, 'switch_to_deploy'):
                module.switch_to_deploy()
        self.deployed = True
        return self

    # --------------------------------------------------- freezing and modes
    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        frozen: list[nn.Module] = [self.patch_embed]
        for i in range(self.frozen_stages + 1):
            frozen.append(getattr(self, f'layer_{i}').blocks)
            if i > 0:
                frozen.append(getattr(self, f'layer_{i - 1}').downsample)
        for module in frozen:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> FcaFormer:
        """Set the mode, keeping frozen stages (and BN if asked) in eval."""
        super().train(mode)
        if mode and self.deployed:
            print_log(
                'FcaFormer.train() after switch_to_deploy(): the BatchNorm '
                'layers and layer scales are fused; training is not '
                'supported.',
                logger='current',
                level=logging.WARNING)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    # ------------------------------------------------------- layer-wise lr
    @property
    def num_decay_layers(self) -> int:
        """``num_layers`` of the official ``layer_wise_cab`` rule.

        Layer ids 1 and 2 are stages 0 and 1, ids 3.. hold three blocks of
        stage 2 each, and stage 3 gets the id after them; this is 6 for L2,
        the value of the official dense configs.
        """
        return 4 + (self.depths[2] - 1) // 3

    def get_layer_depth(self, param_name: str,
                        prefix: str = '') -> tuple[int, int]:
        """Layer id of a parameter for layer-wise learning-rate decay.

        Follows the official ``layer_wise_cab`` grouping, with ``n`` =
        :attr:`num_decay_layers`:

        - ``patch_embed.*`` and every ``s_scale_factors`` and
          ``s_token_bias`` -> 0;
        - ``layer_0.blocks`` -> 1, ``layer_1.blocks`` -> 2,
          ``layer_2.blocks.k`` -> ``3 + k // 3``, ``layer_3.blocks`` -> n;
        - ``layer_0.downsample`` -> 0, ``layer_1.downsample`` -> 2,
          ``layer_2.downsample`` -> 3;
        - everything else (``head{i}``, ``norm{i}``, ``norm_head``, and any
          parameter outside the backbone) -> ``n + 1``.

        The number of layers returned is ``n + 2``, so mmpretrain's
        ``LearningRateDecayOptimWrapperConstructor`` scales the lr of id
        ``k`` by ``rate ** (n + 1 - k)``, as the official constructor does.

        Args:
            param_name (str): Name of the parameter.
            prefix (str): Prefix of the backbone's parameters in
                ``param_name``, e.g. ``'backbone.'``. Defaults to ''.

        Returns:
            Tuple[int, int]: The layer id and the number of layers.
        """
        n = self.num_decay_layers
        if not param_name.startswith(prefix):
            return n + 1, n + 2
        name = param_name[len(prefix):]
        parts = name.split('.')
        if name.startswith('patch_embed') or any(
                key in name for key in ('s_scale_factors', 's_token_bias')):
            # The cross-token scales and biases sit with the stem: the
            # official rule gives them the smallest learning rate.
            layer_id = 0
        elif parts[0] in ('layer_0', 'layer_1', 'layer_2', 'layer_3') \
                and len(parts) > 1:
            stage = int(parts[0][-1])
            if parts[1] == 'blocks':
                if stage < 2:
                    layer_id = stage + 1
                elif stage == 2:
                    layer_id = 3 + int(parts[2]) // 3
                else:
                    layer_id = n
            elif parts[1] == 'downsample':
                layer_id = (0, 2, 3, n)[stage]
            else:
                layer_id = n + 1
        else:
            layer_id = n + 1
        return layer_id, n + 2

    # -------------------------------------------------------- initialisation
    def _pretrained_cfg(self) -> tuple[dict | None, list[dict]]:
        cfgs = self.init_cfg
        if cfgs is None:
            return None, []
        if isinstance(cfgs, Mapping):
            cfgs = [cfgs]
        pretrained, others = None, []
        for cfg in cfgs:
            if cfg.get('type') == 'Pretrained':
                pretrained = dict(cfg)
            else:
                others.append(dict(cfg))
        return pretrained, others

    def init_weights(self) -> None:
        """Initialise the weights, or load them from a checkpoint.

        Without ``init_cfg`` the official initialisation is used. With a
        ``Pretrained`` config the official initialisation runs first (it
        gives the layers absent from the checkpoint, e.g. ``head{i}``, their
        values), then the checkpoint is loaded, see :meth:`load_pretrained`.
        Other ``init_cfg`` entries are applied by mmengine as usual.
        """
        if self.is_init:
            print_log(
                f'init_weights of {type(self).__name__} has been called more '
                'than once.',
                logger='current',
                level=logging.WARNING)
            return
        pretrained, others = self._pretrained_cfg()
        if pretrained is None and others:
            super().init_weights()
            return
        self.apply(_official_init)
        if others:
            initialize(self, others)
        if pretrained is not None:
            cfg = dict(pretrained)
            cfg.pop('type')
            unknown = set(cfg) - {
                'checkpoint', 'prefix', 'map_location', 'state_dict_key'
            }
            if unknown:
                raise ValueError(
                    f'Unknown keys {sorted(unknown)} in the Pretrained '
                    'init_cfg; allowed: checkpoint, prefix, map_location, '
                    'state_dict_key.')
            checkpoint = cfg.pop('checkpoint', None)
            if checkpoint is None:
                raise ValueError(
                    "init_cfg of type 'Pretrained' needs a checkpoint path "
                    'or URL, e.g. with --cfg-options '
                    'model.backbone.init_cfg.checkpoint=PATH; remove the '
                    'init_cfg to start from a random initialisation.')
            self.load_pretrained(checkpoint, **cfg)
        self._is_init = True

    def load_pretrained(self,
                        checkpoint: str,
                        prefix: str | None = None,
                        map_location: str = 'cpu',
                        state_dict_key: str | None = None) -> None:
        """Load weights from an official or OpenMMLab checkpoint.

        Args:
            checkpoint (str): Path or URL of the checkpoint.
            prefix (str, optional): Keep only the keys with this prefix and
                strip it, e.g. ``'backbone.'`` for OpenMMLab checkpoints.
                When no key has it, the keys are used as they are (official
                checkpoints have no prefix). Defaults to None.
            map_location (str): Where to load the tensors. Defaults to
                ``'cpu'``.
            state_dict_key (str, optional): Entry of the checkpoint holding
                the state dict, e.g. ``'model_ema'`` for the EMA weights of
                an official checkpoint. Defaults to None: ``'state_dict'``,
                else ``'model'``, else the checkpoint itself.

        Raises:
            FileNotFoundError: The checkpoint file does not exist.
            KeyError: ``state_dict_key`` is not in the checkpoint.
            RuntimeError: No key of the checkpoint belongs to the model, or
                some shapes differ (each such key is listed with both
                shapes).
        """
        ckpt = CheckpointLoader.load_checkpoint(
            checkpoint, map_location=map_location, logger='current')
        state_dict = _select_state_dict(ckpt, state_dict_key, checkpoint)
        state_dict = self._match_prefix(state_dict, prefix, checkpoint)

        own = self.state_dict()
        mismatched = [
            f'  {key}: checkpoint {tuple(value.shape)}, model '
            f'{tuple(own[key].shape)}' for key, value in state_dict.items()
            if key in own and tuple(value.shape) != tuple(own[key].shape)
        ]
        if mismatched:
            raise RuntimeError(
                f'Shape mismatch between {checkpoint} and '
                f'{type(self).__name__} (check arch, window_sizes and '
                f'out_channels):\n' + '\n'.join(mismatched))

        result = self.load_state_dict(state_dict, strict=False)
        print_log(
            f'Loaded {len(state_dict) - len(result.unexpected_keys)} tensors '
            f'of {type(self).__name__} from {checkpoint}.',
            logger='current')
        if result.missing_keys:
            print_log(
                'Missing keys (left at their initial values): ' +
                ', '.join(result.missing_keys),
                logger='current',
                level=logging.WARNING)
        if result.unexpected_keys:
            print_log(
                'Unexpected keys (ignored): ' +
                ', '.join(result.unexpected_keys),
                logger='current',
                level=logging.WARNING)

    def _match_prefix(self, state_dict: dict[str, torch.Tensor],
                      prefix: str | None,
                      checkpoint: str) -> dict[str, torch.Tensor]:
        own = self.state_dict()
        if prefix:
            if any(key.startswith(prefix) for key in state_dict):
                state_dict = {
                    key[len(prefix):]: value
                    for key, value in state_dict.items()
                    if key.startswith(prefix)
                }
            else:
                print_log(
                    f'No key of {checkpoint} starts with {prefix!r}; '
                    'loading its keys as they are.',
                    logger='current')
        elif not any(key in own for key in state_dict) and any(
                key.startswith('backbone.') for key in state_dict):
            # A whole OpenMMLab model was given without ``prefix``.
            state_dict = {
                key[len('backbone.'):]: value
                for key, value in state_dict.items()
                if key.startswith('backbone.')
            }
        if not any(key in own for key in state_dict):
            sample = ', '.join(list(state_dict)[:5])
            raise RuntimeError(
                f'No key of {checkpoint} belongs to {type(self).__name__} '
                f'(prefix={prefix!r}); its first keys are: {sample}.')
        return state_dict


def _select_state_dict(ckpt: Mapping, state_dict_key: str | None,
                       checkpoint: str) -> dict[str, torch.Tensor]:
    """Pick the state dict out of a loaded checkpoint."""
    if not isinstance(ckpt, Mapping):
        raise TypeError(f'{checkpoint} does not hold a dict but a '
                           f'{type(ckpt).__name__}.')
    if state_dict_key is not None:
        if state_dict_key not in ckpt:
            raise KeyError(f'{checkpoint} has no entry {state_dict_key!r}; '
                           f'its entries are {sorted(map(str, ckpt))}.')
        state_dict = ckpt[state_dict_key]
    elif 'state_dict' in ckpt:
        state_dict = ckpt['state_dict']
    elif 'model' in ckpt:
        state_dict = ckpt['model']
    else:
        state_dict = ckpt
    if not isinstance(state_dict, Mapping):
        raise TypeError(f'The state dict taken from {checkpoint} is a '
                           f'{type(state_dict).__name__}, not a dict.')
    state_dict = {
        key: value
        for key, value in state_dict.items() if isinstance(value, torch.Tensor)
    }
    # Weights saved from a DistributedDataParallel model.
    if state_dict and all(key.startswith('module.') for key in state_dict):
        state_dict = {key[len('module.'):]: v for key, v in state_dict.items()}
    return state_dict
