"""Training kernels of FcaFormer: autograd functions that keep less for the
backward pass and recompute what is cheap to recompute.

They compute the outputs of the reference layers with the same operators,
and the same gradients up to float rounding, on the training paths chosen
by :func:`fcaformer_mm.models.utils.execution.fast_training` (training mode,
autograd on, eager) and :func:`fits` (float32 CPU tensors outside
autocast). Nothing is kept between calls; the weights are read at every
call.

What autograd keeps for the backward pass, against the reference layers:

- :func:`norms_mlp`: ``gamma * fc2(gelu(fc1(norms(x))))`` keeps ``x`` and
  ``fc1``'s output; the norms' outputs and the GELU are recomputed, and
  ``gamma``'s gradient is taken from ``fc2``'s weight gradient (the
  reference keeps the input and output of every norm, both sides of the
  GELU and ``fc2``'s output). :func:`norms_linear` does the same for a norm
  and a linear layer, and :func:`scaled_linear` for ``gamma * linear(x)``.
- :func:`bn_gelu_conv`: ``conv(gelu(bn(y)))`` with BatchNorm in training
  mode keeps ``y`` only (the reference keeps ``y``, the BatchNorm output and
  the GELU output).
- :func:`window_attention`: the attention of the FCA blocks on the CPU runs
  the fused (flash) kernel forward and keeps ``qkv``, the output and the
  log-sum-exp of every row; the backward pass recomputes the probabilities
  window chunk by window chunk, as the gradient of the additive mask needs
  them (the reference keeps the probabilities of all windows, and copies of
  the queries, keys and values).
- :func:`gather_rows`: padding and window partition (and back) by one
  ``index_select`` with a backward that is one ``index_select`` too (the
  reference's backward scatters with atomic adds).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .cpu_kernels import autocast_on
from .execution import current_options, fast_training
from .windows import split_heads


def fits(x: torch.Tensor) -> bool:
    """Whether the training kernels take ``x``: float32 CPU tensors outside
    autocast (the kernels are written with device-neutral operators, but
    measured and tested on the CPU only)."""
    return (x.device.type == 'cpu' and x.dtype == torch.float32
            and not autocast_on('cpu'))


def applies(module: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``module`` runs its training kernels on ``x`` now
    (:func:`~.execution.fast_training` and :func:`fits`)."""
    return fast_training(module) and fits(x)


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, x.shape[-1])


# --------------------------------------------------------------------------
# Norms, linear layers, MLPs
# --------------------------------------------------------------------------
def _layer_norms(x: torch.Tensor, norms: Sequence[tuple], keep: bool):
    """Run the ``(weight, bias, eps)`` norms; with ``keep``, also return
    the input of each norm and its statistics."""
    shape = (x.shape[-1], )
    steps = []
    for weight, bias, eps in norms:
        out, mean, rstd = torch.native_layer_norm(x, shape, weight, bias,
                                                  eps)
        if keep:
            steps.append((x, mean, rstd))
        x = out
    return x, steps


def _layer_norms_backward(grad: torch.Tensor, steps: list,
                          norms: Sequence[tuple]) -> tuple[list, torch.Tensor]:
    grads = []
    for (x, mean, rstd), (weight, bias, _) in zip(reversed(steps),
                                                  reversed(norms)):
        grad, dw, db = torch.ops.aten.native_layer_norm_backward(
            grad, x, (x.shape[-1], ), mean, rstd, weight, bias,
            [True, True, True])
        grads[:0] = [dw, db]
    return grads, grad


def _scaled_weight_grads(grad, x, weight, bias, gamma):
    """Gradients of ``weight``, ``bias``, ``gamma`` for ``gamma *
    linear(x)``, with ``gamma``'s from the unscaled weight gradient:
    ``sum(grad * linear(x)) = sum(grad^T x * weight) + sum(grad) * bias``."""
    raw = grad.t() @ x
    total = grad.sum(0)
    if gamma is None:
        return raw, total, None
    dgamma = (raw * weight).sum(1)
    if bias is not None:
        dgamma += total * bias
    return raw.mul_(gamma[:, None]), total.mul_(gamma), dgamma


class _NormsMlp(torch.autograd.Function):
    """``gamma * fc2(gelu(fc1(norms(x))))`` or, without ``fc2``,
    ``fc1(norms(x))``, on ``(N, C)`` rows."""

    @staticmethod
    def forward(ctx, x, eps, w1, b1, w2, b2, gamma, *norm_params):
        norms = [(norm_params[i], norm_params[i + 1], e)
                 for i, e in zip(range(0, len(norm_params), 2), eps)]
        h = F.linear(_layer_norms(x, norms, keep=False)[0], w1, b1)
        ctx.eps, ctx.mlp = eps, w2 is not None
        if w2 is None:
            ctx.save_for_backward(x, w1, *norm_params)
            return h
        out = F.linear(F.gelu(h), w2, b2)
        if gamma is not None:
            out = gamma * out
        ctx.save_for_backward(x, w1, h, w2, b2, gamma, *norm_params)
        return out

    @staticmethod
    def backward(ctx, grad):
        mlp = ctx.mlp
        x, w1, *rest = ctx.saved_tensors
        if mlp:
            h, w2, b2, gamma, *norm_params = rest
        else:
            norm_params = rest
        norms = [(norm_params[i], norm_params[i + 1], e)
                 for i, e in zip(range(0, len(norm_params), 2), ctx.eps)]
        u, steps = _layer_norms(x, norms, keep=True)
        grad = grad.contiguous()
        if mlp:
            act = F.gelu(h)
            dw2, db2, dgamma = _scaled_weight_grads(grad, act, w2, b2, gamma)
            del act
            if gamma is not None:
                grad = grad * gamma
            dh = grad @ w2
            dh = torch.ops.aten.gelu_backward.grad_input(dh, h, grad_input=dh)
            head = [dw2, db2, dgamma]
        else:
            dh, head = grad, [None, None, None]
        dw1, db1 = dh.t() @ u, dh.sum(0)
        del u
        dnorms, dx = _layer_norms_backward(dh @ w1, steps, norms)
        return (dx, None, dw1, db1, *head, *dnorms)


def _norm_args(norms: Sequence[nn.LayerNorm]) -> tuple[tuple, list]:
    eps = tuple(float(n.eps) for n in norms)
    params = [p for n in norms for p in (n.weight, n.bias)]
    return eps, params


def norms_mlp(x: torch.Tensor, norms: Sequence[nn.LayerNorm], fc1: nn.Linear,
              fc2: nn.Linear, gamma: torch.Tensor | None) -> torch.Tensor:
    """``gamma * fc2(gelu(fc1(norms(x))))`` over the last dimension of
    ``x``, the norms applied in turn (see the module docstring)."""
    eps, params = _norm_args(norms)
    out = _NormsMlp.apply(_flat(x), eps, fc1.weight, fc1.bias, fc2.weight,
                          fc2.bias, gamma, *params)
    return out.view(*x.shape[:-1], -1)


def norms_linear(x: torch.Tensor, norms: Sequence[nn.LayerNorm],
                 linear: nn.Linear) -> torch.Tensor:
    """``linear(norms(x))``, keeping ``x`` only."""
    eps, params = _norm_args(norms)
    out = _NormsMlp.apply(_flat(x), eps, linear.weight, linear.bias, None,
                          None, None, *params)
    return out.view(*x.shape[:-1], -1)


class _ScaledLinear(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x, weight, bias, gamma):
        ctx.save_for_backward(x, weight, bias, gamma)
        return gamma * F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight, bias, gamma = ctx.saved_tensors
        grad = grad.contiguous()
        dw, db, dgamma = _scaled_weight_grads(grad, x, weight, bias, gamma)
        return (grad * gamma) @ weight, dw, db, dgamma


def scaled_linear(x: torch.Tensor, linear: nn.Linear,
                  gamma: torch.Tensor | None) -> torch.Tensor:
    """``gamma * linear(x)`` keeping ``x`` only (not ``linear(x)``)."""
    if gamma is None:
        return linear(x)
    out = _ScaledLinear.apply(_flat(x), linear.weight, linear.bias, gamma)
    return out.view(*x.shape[:-1], -1)


# --------------------------------------------------------------------------
# BatchNorm, GELU, convolution
# --------------------------------------------------------------------------
class _BnGeluConv(torch.autograd.Function):

    @staticmethod
    def forward(ctx, y, bn_weight, bn_bias, running_mean, running_var,
                momentum, eps, weight, conv_args):
        out, mean, invstd = torch.native_batch_norm(y, bn_weight, bn_bias,
                                                    running_mean, running_var,
                                                    True, momentum, eps)
        out = F.conv2d(F.gelu(out), weight, None, *conv_args)
        ctx.eps, ctx.conv_args = eps, conv_args
        ctx.save_for_backward(y, bn_weight, bn_bias, weight, mean, invstd)
        return out

    @staticmethod
    def backward(ctx, grad):
        y, bn_weight, bn_bias, weight, mean, invstd = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv_args
        # The BatchNorm output in one pass, as BatchNorm computes it on the
        # CPU: y * (invstd * weight) + (bias - mean * invstd * weight).
        alpha = invstd * bn_weight
        shape = (1, -1) + (1, ) * (y.dim() - 2)
        t = torch.addcmul((bn_bias - mean * alpha).view(shape), y,
                          alpha.view(shape))
        dz, dweight, _ = torch.ops.aten.convolution_backward(
            grad, F.gelu(t), weight, None, stride, padding, dilation, False,
            [0] * len(stride), groups, [True, True, False])
        dt = torch.ops.aten.gelu_backward(dz, t)
        del dz, t
        dy, dbw, dbb = torch.ops.aten.native_batch_norm_backward(
            dt, y, bn_weight, None, None, mean, invstd, True, ctx.eps,
            [True, True, True])
        return dy, dbw, dbb, None, None, None, None, dweight, None


def bn_gelu_conv(y: torch.Tensor, bn: nn.modules.batchnorm._BatchNorm,
                 conv: nn.Conv2d) -> torch.Tensor:
    """``conv(gelu(bn(y)))`` for a BatchNorm in training mode with running
    statistics and affine parameters, and a convolution without bias and
    with zero padding (:class:`~.layers.ConvBN`'s); ``bn``'s running
    statistics are updated as its forward updates them."""
    # What ``_BatchNorm.forward`` does in training mode.
    momentum = 0. if bn.momentum is None else bn.momentum
    if bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:  # cumulative moving average
            momentum = 1. / float(bn.num_batches_tracked)
    return _BnGeluConv.apply(y, bn.weight, bn.bias, bn.running_mean,
                             bn.running_var, momentum, bn.eps, conv.weight,
                             (conv.stride, conv.padding, conv.dilation,
                              conv.groups))


def bn_gelu_conv_fits(bn: nn.Module | None, conv: nn.Conv2d) -> bool:
    """Whether :func:`bn_gelu_conv` computes ``conv(gelu(bn(.)))``: a
    plain ``BatchNorm2d`` (not SyncBatchNorm, whose statistics span
    processes) in training mode."""
    return (type(bn) is nn.BatchNorm2d and bn.training
            and bn.track_running_stats and bn.affine
            and isinstance(conv, nn.Conv2d) and conv.bias is None
            and conv.padding_mode == 'zeros'
            and not isinstance(conv.padding, str))


def conv_bn_gelu_chain(x: torch.Tensor,
                       layers: Sequence[nn.Module]) -> torch.Tensor:
    """``layers[-1](gelu(... gelu(layers[0](x))))`` for
    :class:`~.layers.ConvBN` layers, each BatchNorm-GELU-convolution
    through :func:`bn_gelu_conv` where it fits (BatchNorm in training
    mode), else as the modules."""
    y = layers[0].c(x)
    for prev, layer in zip(layers[:-1], layers[1:]):
        bn = prev._modules.get('bn')
        if bn_gelu_conv_fits(bn, layer.c):
            y = bn_gelu_conv(y, bn, layer.c)
        else:
            y = layer.c(F.gelu(prev.bn(y) if bn is not None else y))
    bn = layers[-1]._modules.get('bn')
    return y if bn is None else bn(y)


# --------------------------------------------------------------------------
# Windows
# --------------------------------------------------------------------------
class _GatherRows(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x, pad, index, inverse):
        pad_rows = None
        if pad is not None:
            pad_rows = (index == x.shape[0]).nonzero().squeeze(1)
        if index.numel() > x.shape[0]:  # ``index`` points at a pad row
            fill = x.new_zeros(1, x.shape[1]) if pad is None else pad.view(
                1, -1)
            x_rows = x.shape[0]
            x = torch.cat((x, fill))
        else:
            x_rows = x.shape[0]
        ctx.inverse, ctx.pad_rows, ctx.x_rows = inverse, pad_rows, x_rows
        ctx.with_pad = pad is not None
        return x.index_select(0, index)

    @staticmethod
    def backward(ctx, grad):
        if ctx.x_rows > grad.shape[0]:  # some rows of x are not in the output
            grad_ext = torch.cat((grad, grad.new_zeros(1, grad.shape[1])))
        else:
            grad_ext = grad
        dx = grad_ext.index_select(0, ctx.inverse)
        dpad = grad.index_select(0, ctx.pad_rows).sum(0) \
            if ctx.with_pad else None
        return dx, dpad, None, None


def gather_rows(x: torch.Tensor, index: torch.Tensor, inverse: torch.Tensor,
                pad: torch.Tensor | None = None) -> torch.Tensor:
    """``cat((x, pad_row)).index_select(0, index)`` for the one-to-one row
    maps of :func:`~.windows.window_indices`.

    Args:
        x (torch.Tensor): ``(N, C)`` rows.
        index (torch.Tensor): Row of ``x`` for each output row; ``N`` for a
            pad row (zeros, or ``pad``).
        inverse (torch.Tensor): Output row of each row of ``x``, or the
            number of output rows where a row of ``x`` is not in the output.
        pad (torch.Tensor, optional): ``(C, )`` value of the pad rows.
            Defaults to None: zeros.
    """
    return _GatherRows.apply(x, pad, index, inverse)


def windows_and_qkv(flat: torch.Tensor, norm: nn.LayerNorm, qkv: nn.Linear,
                    to_windows: torch.Tensor, to_map: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """The zero-padded windows of a map and their ``qkv(norm(.))``.

    ``qkv`` runs on the real positions (:func:`norms_linear`) and on one
    zero row, the value of every padded position; both are padded and
    partitioned by :func:`gather_rows`.

    Args:
        flat (torch.Tensor): ``(B * H * W, C)`` rows of the map.
        norm (nn.LayerNorm): The norm before ``qkv``.
        qkv (nn.Linear): The projection.
        to_windows, to_map (torch.Tensor): The row maps of
            :func:`~.windows.window_indices`.

    Returns:
        tuple[torch.Tensor, torch.Tensor]: ``(num_windows * T, C)`` windows
        and ``(num_windows * T, 3C)`` projections.
    """
    windows = gather_rows(flat, to_windows, to_map)
    pad = qkv(norm(flat.new_zeros(1, flat.shape[1])))[0]
    rows = norms_linear(flat, (norm, ), qkv)
    return windows, gather_rows(rows, to_windows, to_map, pad)


# --------------------------------------------------------------------------
# Attention
# --------------------------------------------------------------------------
class _WindowAttention(torch.autograd.Function):

    @staticmethod
    def forward(ctx, qkv, kv, mask, heads, scale, chunk_bytes):
        q, k, v = split_heads(qkv, kv, heads)
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, 0., False, attn_mask=mask, scale=scale)
        ctx.heads, ctx.scale, ctx.chunk_bytes = heads, scale, chunk_bytes
        ctx.save_for_backward(qkv, kv, mask, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad):
        qkv, kv, mask, out, lse = ctx.saved_tensors
        heads, scale = ctx.heads, ctx.scale
        q, k, v = split_heads(qkv, kv, heads)
        num_windows, _, tokens, head_dim = q.shape
        keys = k.shape[2]
        # D_i = sum_j P_ij dP_ij = dO_i . O_i
        delta = (grad * out).sum(-1, keepdim=True)
        dqkv = qkv.new_empty(num_windows, tokens, 3, heads, head_dim)
        dq, dk_w, dv_w = dqkv.permute(2, 0, 3, 1, 4).unbind(0)
        dkv = dk_s = dv_s = None
        if kv is not None:
            dkv = kv.new_empty(num_windows, keys - tokens, 2, heads, head_dim)
            dk_s, dv_s = dkv.permute(2, 0, 3, 1, 4).unbind(0)
        dmask = mask.new_zeros(mask.shape[1:])
        step = max(1, ctx.chunk_bytes //
                   (heads * tokens * keys * mask.element_size()))
        for s in range(0, num_windows, step):
            e = min(s + step, num_windows)
            qc, kc, vc, gc = q[s:e], k[s:e], v[s:e], grad[s:e]
            # P = exp(q k^T * scale + mask - lse)
            p = torch.matmul(qc, kc.transpose(-2, -1)).mul_(scale)
            p = p.add_(mask).sub_(lse[s:e].unsqueeze(-1)).exp_()
            dv = torch.matmul(p.transpose(-2, -1), gc)
            # dS = P * (dP - D), dP = dO v^T
            ds = torch.matmul(gc, vc.transpose(-2, -1))
            ds = ds.sub_(delta[s:e]).mul_(p)
            del p
            dmask += ds.sum(0)
            dq[s:e] = torch.matmul(ds, kc).mul_(scale)
            dk = torch.matmul(ds.transpose(-2, -1), qc).mul_(scale)
            dk_w[s:e] = dk[:, :, :tokens]
            dv_w[s:e] = dv[:, :, :tokens]
            if dkv is not None:
                dk_s[s:e] = dk[:, :, tokens:]
                dv_s[s:e] = dv[:, :, tokens:]
        dqkv = dqkv.view(qkv.shape)
        if dkv is not None:
            dkv = dkv.view(kv.shape)
        return dqkv, dkv, dmask.unsqueeze(0), None, None, None


def window_attention(qkv: torch.Tensor, kv: torch.Tensor | None,
                     mask: torch.Tensor, heads: int, scale: float,
                     chunk_bytes: int | None = None) -> torch.Tensor:
    """Attention of the windows' tokens (and cross tokens) on the CPU.

    Args:
        qkv (torch.Tensor): ``(nW, T, 3C)`` window tokens' projection.
        kv (torch.Tensor, optional): ``(nW, n, 2C)`` cross tokens' keys and
            values, attended after the window's keys.
        mask (torch.Tensor): ``(1, heads, T, T + n)`` additive mask.
        heads (int): Attention heads.
        scale (float): Factor of the logits.
        chunk_bytes (int, optional): Bytes of probabilities recomputed at
            once in the backward pass (at least one window at a time).
            Defaults to None: the ``attention_chunk_bytes`` execution option
            of the calling context.

    Returns:
        torch.Tensor: ``(nW, heads, T, C // heads)``.
    """
    if chunk_bytes is None:
        chunk_bytes = current_options().attention_chunk_bytes
    return _WindowAttention.apply(qkv.contiguous(),
                                  None if kv is None else kv.contiguous(),
                                  mask, heads, scale, chunk_bytes)


def window_attention_fits(qkv: torch.Tensor) -> bool:
    """Whether :func:`window_attention` runs here (the fused CPU kernel)."""
    return qkv.device.type == 'cpu' and hasattr(
        torch.ops.aten, '_scaled_dot_product_flash_attention_for_cpu')


__all__ = [
    'applies', 'bn_gelu_conv', 'bn_gelu_conv_fits',
    'conv_bn_gelu_chain', 'fits', 'gather_rows', 'norms_linear', 'norms_mlp',
    'scaled_linear', 'window_attention', 'window_attention_fits',
    'windows_and_qkv'
]
