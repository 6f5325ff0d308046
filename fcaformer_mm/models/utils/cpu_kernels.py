"""Eager CPU inference kernels of FcaFormer, with their FLOP formulas.

These compute what the reference layers compute (up to float rounding),
faster, on the fast paths chosen by
:func:`fcaformer_mm.models.utils.execution.fast_inference` (eval mode, no
autograd, eager). Nothing here keeps state between calls: weights are read
(and Conv-BN folded, layer scales applied) at every call, so any change of a
parameter or buffer, ``.data`` copies included, shows in the next forward.

- :func:`linear`: ``F.linear``, or with the ``onednn_linear`` execution
  option float32 CPU linear layers through oneDNN (the library behind
  PyTorch's CPU convolutions), GELU fused: much faster than ``F.linear``
  where the BLAS is not tuned for the CPU (about 2x on one AMD EPYC VM),
  slower on the AMD EPYC of docs/performance_inference.md, equal on an
  Intel Xeon.
- :func:`pointwise_conv`: a 1x1 convolution as a :func:`linear` layer.
- :func:`conv_bn`: a :class:`~fcaformer_mm.models.utils.layers.ConvBN` as one
  convolution with the BatchNorm folded in and GELU fused, or as a
  convolution and the BatchNorm where no GELU follows.
- :func:`mlp_rows`: ``residual + gamma * fc2(gelu(fc1(norm(x))))`` in row
  chunks, so the 4x-wide hidden tensor stays in cache.

The oneDNN calls are wrapped as custom ops (``fcaformer_mm::onednn_linear``,
``fcaformer_mm::onednn_conv_gelu``) with FLOP formulas registered for
``torch.utils.flop_counter``, which counts nothing for an op it does not
know.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .execution import current_options, is_tracing
from .layers import fold_conv_bn


def _mkldnn_op(name: str) -> bool:
    return (hasattr(torch.library, 'custom_op')
            and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, name))


def _define_onednn_linear():
    """``fcaformer_mm::onednn_linear``, or None where it cannot be made.

    A custom op around ``torch.ops.mkldnn._linear_pointwise``: opaque to
    ``torch.compile`` (whose lowering of the raw op expects pre-packed
    weights). No autograd: inference only.
    """
    if not _mkldnn_op('_linear_pointwise'):
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


def _define_onednn_conv_gelu():
    """``fcaformer_mm::onednn_conv_gelu`` (a convolution then exact GELU in
    one oneDNN call), or None where it cannot be made."""
    if not _mkldnn_op('_convolution_pointwise'):
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


ONEDNN_LINEAR_OP = _define_onednn_linear()
ONEDNN_CONV_GELU_OP = _define_onednn_conv_gelu()


def _linear_flops(x_shape, weight_shape, *args, out_shape=None, **kwargs):
    return 2 * math.prod(x_shape[:-1]) * weight_shape[0] * weight_shape[1]


def _conv_flops(x_shape, weight_shape, *args, out_shape=None, **kwargs):
    from torch.utils.flop_counter import conv_flop_count
    return conv_flop_count(x_shape, weight_shape, out_shape, transposed=False)


def _register_flop_formulas() -> None:
    """Tell ``torch.utils.flop_counter`` what the custom ops compute (2
    FLOPs per multiply-add, as for aten's ops)."""
    try:
        from torch.utils.flop_counter import (
            flop_registry,
            register_flop_formula,
        )
    except ImportError:  # torch < 2.2: nothing to register with
        return
    for op, name, formula in (
        (ONEDNN_LINEAR_OP, 'onednn_linear', _linear_flops),
        (ONEDNN_CONV_GELU_OP, 'onednn_conv_gelu', _conv_flops),
    ):
        if op is not None:
            packet = getattr(torch.ops.fcaformer_mm, name)
            if packet not in flop_registry:
                register_flop_formula(packet)(formula)


_register_flop_formulas()


def autocast_on(device_type: str) -> bool:
    """Whether autocast is enabled for ``device_type``."""
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4
        return device_type == 'cpu' and torch.is_autocast_cpu_enabled()


def _onednn_fits(x: torch.Tensor, *tensors: torch.Tensor | None) -> bool:
    """Float32 CPU tensors, no autograd, no autocast, eager."""
    return (x.device.type == 'cpu' and x.dtype == torch.float32
            and all(t is None or t.dtype == torch.float32 for t in tensors)
            and not torch.is_grad_enabled() and not autocast_on('cpu')
            and not is_tracing())


def linear(x: torch.Tensor,
           weight: torch.Tensor,
           bias: torch.Tensor | None = None,
           gelu: bool = False) -> torch.Tensor:
    """``F.linear`` (then exact GELU if ``gelu``), through oneDNN if asked.

    oneDNN is used while the ``onednn_linear`` execution option is on, for
    float32 CPU tensors without autograd, in eager mode outside of
    autocast.
    """
    if (ONEDNN_LINEAR_OP is not None and current_options().onednn_linear
            and _onednn_fits(x, weight, bias)):
        return ONEDNN_LINEAR_OP(x.contiguous(), weight.contiguous(), bias,
                                gelu)
    x = F.linear(x, weight, bias)
    if not gelu:
        return x
    # In place where nothing needs the pre-activation (no autograd).
    return F.gelu(x) if x.requires_grad else torch._C._nn.gelu_(x)


def linear_layer(layer: nn.Linear, x: torch.Tensor,
                 fast: bool) -> torch.Tensor:
    """``layer(x)``: through :func:`linear` if ``fast``, else the module
    itself (so that module hooks, e.g. MAC counters, see it)."""
    return linear(x, layer.weight, layer.bias) if fast else layer(x)


def _is_pointwise(conv: nn.Conv2d) -> bool:
    return (conv.kernel_size == (1, 1) and conv.stride == (1, 1)
            and conv.padding == (0, 0) and conv.groups == 1)


def pointwise_conv(x: torch.Tensor,
                   weight: torch.Tensor,
                   bias: torch.Tensor | None = None,
                   gelu: bool = False) -> torch.Tensor:
    """A 1x1 convolution of stride 1 as a :func:`linear` layer over the
    channels of each position (then GELU if ``gelu``).

    For a channels-last ``(N, C, H, W)`` map the rows are a view and so is
    the channels-last result: no layout copies, and the GEMM of the linear
    backend rather than the generic convolution path (which aten takes for
    1x1 convolutions of one small image).
    """
    batch, channels, height, width = x.shape
    rows = x.permute(0, 2, 3, 1).reshape(-1, channels)
    out = linear(rows, weight.view(weight.shape[0], -1), bias, gelu)
    return out.view(batch, height, width, -1).permute(0, 3, 1, 2)


def conv_bn(module: nn.Module,
            x: torch.Tensor,
            gelu: bool = False) -> torch.Tensor:
    """A ``ConvBN``, then GELU if asked, in as few operator calls as may be.

    Works for deployed ``ConvBN`` modules too (``c`` with a bias, no
    ``bn``). With ``gelu``, the BatchNorm is folded into the convolution at
    this call and GELU is fused into it (through oneDNN for float32 CPU
    tensors outside of autocast); without, the convolution is followed by
    the BatchNorm in eval mode (one operator: cheaper than folding at every
    call). 1x1 convolutions run as :func:`pointwise_conv`.

    Args:
        module (nn.Module): A :class:`~fcaformer_mm.models.utils.layers.
            ConvBN`.
        x (torch.Tensor): ``(N, C, H, W)`` input.
        gelu (bool): Apply exact GELU after it. Defaults to False.
    """
    conv = module.c
    bn = module._modules.get('bn')
    pointwise = _is_pointwise(conv)
    if bn is not None and not gelu:
        if pointwise:
            x = pointwise_conv(x, conv.weight, conv.bias)
        else:
            x = F.conv2d(x, conv.weight, conv.bias, conv.stride,
                         conv.padding, conv.dilation, conv.groups)
        return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight,
                            bn.bias, False, 0., bn.eps)
    if bn is None:
        weight, bias = conv.weight, conv.bias
    else:
        weight, bias = fold_conv_bn(conv, bn)
    if pointwise:
        return pointwise_conv(x, weight, bias, gelu)
    if gelu and ONEDNN_CONV_GELU_OP is not None and _onednn_fits(
            x, weight, bias):
        return ONEDNN_CONV_GELU_OP(x, weight.contiguous(), bias,
                                   list(conv.padding), list(conv.stride),
                                   list(conv.dilation), conv.groups)
    x = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation,
                 conv.groups)
    return F.gelu(x) if gelu else x


def add_scaled(x: torch.Tensor | None,
               y: torch.Tensor,
               gamma: torch.Tensor | None,
               out: torch.Tensor | None = None) -> torch.Tensor:
    """``x + gamma * y`` in one operator: a residual with its layer scale.

    ``x`` None drops the residual and ``gamma`` None the scale (``y`` alone
    if both are None). With ``out``, the result is written there.
    """
    if x is None and gamma is None:
        return y if out is None else out.copy_(y)
    if x is None:
        return torch.mul(y, gamma, out=out)
    if gamma is None:
        return torch.add(x, y, out=out)
    return torch.addcmul(x, y, gamma, out=out)


def mlp_rows(x: torch.Tensor,
             fc1: nn.Linear,
             fc2: nn.Linear,
             gamma: torch.Tensor | None = None,
             norm: nn.Module | None = None,
             residual: torch.Tensor | None = None) -> torch.Tensor:
    """``residual + gamma * fc2(gelu(fc1(norm(x))))`` over the last
    dimension of ``x``.

    The rows go in chunks of at most the ``mlp_chunk`` execution option,
    and each chunk's result is added to the residual straight into a slice
    of the output, so the 4x-wide hidden tensor never exists whole. The
    layer scale is applied with the residual (one ``addcmul``), not to the
    weights.

    Args:
        x (torch.Tensor): ``(..., C)`` input.
        fc1 (nn.Linear): First linear layer (followed by exact GELU).
        fc2 (nn.Linear): Second linear layer.
        gamma (torch.Tensor, optional): Layer scale. Defaults to None.
        norm (nn.Module, optional): Norm applied first. Defaults to None.
        residual (torch.Tensor, optional): ``(..., C)`` tensor the result
            is added to. Defaults to None (nothing added).
    """
    shape = x.shape
    x = x.reshape(-1, shape[-1])
    if residual is not None:
        residual = residual.reshape(x.shape[0], -1)

    def run(part: torch.Tensor) -> torch.Tensor:
        if norm is not None:
            part = norm(part)
        part = linear(part, fc1.weight, fc1.bias, gelu=True)
        return linear(part, fc2.weight, fc2.bias)

    rows, chunk = x.shape[0], current_options().mlp_chunk
    if chunk <= 0 or rows <= chunk:
        return add_scaled(residual, run(x), gamma).view(*shape[:-1], -1)
    out = None
    for start in range(0, rows, chunk):
        part = run(x[start:start + chunk])
        end = start + part.shape[0]
        if out is None:
            dtype = part.dtype if residual is None else torch.result_type(
                residual, part)
            out = part.new_empty(rows, part.shape[1], dtype=dtype)
        add_scaled(None if residual is None else residual[start:end], part,
                   gamma, out[start:end])
    return out.view(*shape[:-1], -1)
