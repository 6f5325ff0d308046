"""Building blocks that are not specific to FcaFormer.

They are written here rather than taken from mmcv so that the core package
depends on torch and mmengine only.
"""
from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from torch import nn
from torch.nn.utils import parametrize


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


def trunc_normal_(tensor: torch.Tensor,
                  std: float = 1.,
                  a: float = -2.,
                  b: float = 2.) -> torch.Tensor:
    """Fill ``tensor`` in place from a normal of mean 0 and ``std``,
    truncated to ``[a, b]``, without temporary tensors.

    ``torch.nn.init.trunc_normal_`` samples through the inverse CDF, whose
    kernels hold temporaries as large as the tensor (6 MiB of resident
    memory for initialising FcaFormer-L2). Where both bounds lie at least 8
    standard deviations out (the official init: std 0.02, bounds +-2, i.e.
    100 standard deviations), a value falls outside with probability below
    1.3e-15, so a plain normal draw is the same distribution; the draw is
    clamped to the bounds for that case. Closer bounds go to torch's
    function.

    Returns:
        torch.Tensor: ``tensor``.
    """
    if min(-a, b) < 8 * std:
        return nn.init.trunc_normal_(tensor, std=std, a=a, b=b)
    with torch.no_grad():
        return tensor.normal_(0., std).clamp_(a, b)


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


def scaled(gamma: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """``gamma * x`` (a layer scale), or ``x`` when ``gamma`` is None."""
    return x if gamma is None else gamma * x


def official_init(module: nn.Module) -> None:
    """FcaFormer's official initialisation of one module (an ``apply``
    target): truncated normal (std 0.02) convolution and linear weights,
    zero biases; LayerNorm and BatchNorm weights 1, biases 0."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        trunc_normal_(module.weight, std=.02, a=-2., b=2.)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
        if module.weight is not None:
            nn.init.ones_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def fold_conv_bn(
        conv: nn.Conv2d,
        bn: nn.modules.batchnorm._BatchNorm
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``bn(conv(x))`` in eval mode as one convolution.

    Args:
        conv (nn.Conv2d): A convolution without bias.
        bn (nn.BatchNorm2d): The BatchNorm after it (its running
            statistics are used).

    Returns:
        tuple[torch.Tensor, torch.Tensor]: The folded weight and bias,
        computed from the current values (nothing is kept).
    """
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    return (conv.weight * scale.view(-1, 1, 1, 1),
            torch.addcmul(bn.bias, bn.running_mean, scale, value=-1))


class ConvBN(nn.Sequential):
    """Convolution without bias followed by BatchNorm2d.

    The children are named ``c`` and ``bn`` as in the official code, and
    the forward pass is exactly ``bn(c(x))``. :meth:`switch_to_deploy`
    folds the BatchNorm into the convolution once, explicitly.

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

    @property
    def deployed(self) -> bool:
        """Whether the BatchNorm has been folded into ``c``."""
        return 'bn' not in self._modules

    def fused_conv(self) -> nn.Conv2d:
        """A new convolution with bias computing ``bn(c(x))`` in eval mode
        (the BatchNorm's running statistics folded in); nothing is changed.
        """
        conv = self.c
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
            weight, bias = fold_conv_bn(conv, self.bn)
            fused.weight.copy_(weight)
            fused.bias.copy_(bias)
        fused.requires_grad_(conv.weight.requires_grad)
        return fused


@contextlib.contextmanager
def keep_bn_statistics(module: nn.Module) -> Iterator[None]:
    """Undo what a forward pass does to BatchNorm running statistics.

    Activation checkpointing runs a block's forward a second time during
    the backward pass; without this, the BatchNorm layers of the block
    would count every training batch twice. Outputs do not change: in
    training mode BatchNorm normalises with batch statistics.
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


def checkpointed_call(module: nn.Module, with_cp: bool, *args):
    """Call ``module``, through activation checkpointing if ``with_cp`` and
    autograd is on; BatchNorm statistics are updated once, as without it."""
    if with_cp and torch.is_grad_enabled():
        return cp.checkpoint(
            module,
            *args,
            use_reentrant=False,
            context_fn=lambda:
            (contextlib.nullcontext(), keep_bn_statistics(module)))
    return module(*args)


def folded_layer_scale(gamma: torch.Tensor, linear: nn.Linear
                       ) -> tuple[nn.Parameter, nn.Parameter]:
    """New weight and bias of ``linear`` with the layer scale ``gamma``
    that multiplies its output folded in; nothing is changed."""
    with torch.no_grad():
        weight = linear.weight * gamma[:, None]
        bias = linear.bias * gamma
    return (nn.Parameter(weight, linear.weight.requires_grad),
            nn.Parameter(bias, linear.bias.requires_grad))


def drop_path_per_window(x: torch.Tensor, drop_prob: float, training: bool,
                         grid: tuple[int, int, int], crop: tuple[int, int]
                         ) -> torch.Tensor:
    """Stochastic depth with one draw per attention window, as the official
    FCA blocks drop on windows.

    Args:
        x (torch.Tensor): ``(B, H, W, C)`` output of a residual branch.
        drop_prob (float): Probability to drop a window.
        training (bool): Only drop in training mode.
        grid (tuple[int, int, int]): Window rows, columns and side of the
            padded map.
        crop (tuple[int, int]): Padding rows at the top and columns at the
            left, cropped to give ``x``'s positions.
    """
    if drop_prob == 0. or not training:
        return x
    (rows, cols, ws), (top, left) = grid, crop
    batch, height, width = x.shape[:3]
    keep = 1 - drop_prob
    mask = x.new_empty(batch, rows, 1, cols, 1, 1).bernoulli_(keep)
    mask = mask.div_(keep).expand(-1, -1, ws, -1, ws, -1).reshape(
        batch, rows * ws, cols * ws, 1)
    return x * mask[:, top:top + height, left:left + width]


def fold_for_deploy(model: nn.Module) -> None:
    """Fold every :class:`ConvBN` of ``model`` into a convolution, and every
    layer scale that a module declares in its ``layer_scales`` mapping
    (``{gamma name: name of the linear layer it scales}``) into that layer.

    All folds are computed first, as new tensors, and applied only when all
    succeeded: on any error the model is unchanged, and tensors that other
    code holds (a state-dict snapshot, a model sharing them) never change.

    Raises:
        RuntimeError: If a module is parametrized
            (``torch.nn.utils.parametrize``): its weight is computed, so
            folding would drop the parametrization.
    """
    convs, scales = [], []
    for name, module in model.named_modules():
        if parametrize.is_parametrized(module):
            raise RuntimeError(
                f'switch_to_deploy(): {name or "the model"} is parametrized '
                '(torch.nn.utils.parametrize); remove the parametrization '
                '(parametrize.remove_parametrizations) before deploying. '
                'Nothing was changed.')
        if isinstance(module, ConvBN) and not module.deployed:
            convs.append((module, module.fused_conv()))
        for gamma_name, linear_name in getattr(module, 'layer_scales',
                                               {}).items():
            gamma = getattr(module, gamma_name)
            if gamma is not None:
                linear = module.get_submodule(linear_name)
                scales.append((module, gamma_name, linear,
                               folded_layer_scale(gamma, linear)))
    # Attribute assignments only from here on: they cannot fail halfway.
    for module, fused in convs:
        del module.bn
        module.c = fused
    for module, gamma_name, linear, (weight, bias) in scales:
        linear.weight, linear.bias = weight, bias
        module.register_parameter(gamma_name, None)
