"""Deterministic weights and inputs, the same on every machine.

One source for the tests, :mod:`fcaformer_mm.analysis.golden` (which
rebuilds ``tests/data/fcaformer_golden.pth`` by running the official code)
and :mod:`fcaformer_mm.analysis.compare`: the golden fixtures hold outputs
of the official code for exactly these weights and inputs, so both sides
must draw them from here. :func:`seeded_model` gives an FcaFormer with
such weights, in eval mode, for the tests that need one.

Example:
    >>> from fcaformer_mm.models import FcaFormer
    >>> from fcaformer_mm.analysis.seeded import (seeded_input,
    ...     seeded_state_dict, shapes_of)
    >>> model = FcaFormer('l1').eval()
    >>> model.load_state_dict(seeded_state_dict(shapes_of(model), 2023))
    <All keys matched successfully>
    >>> outs = model(seeded_input((1, 3, 64, 64), seed=11))
"""
from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence

import torch
from torch import nn

__all__ = ['seeded_input', 'seeded_state_dict', 'shapes_of', 'seeded_model']


def seeded_state_dict(shapes: Mapping[str, Sequence[int]],
                      seed: int) -> dict[str, torch.Tensor]:
    """Deterministic weights for the given state-dict names and shapes.

    Every entry gets its own generator, seeded from ``seed`` and the CRC32
    of its name, so its values depend on its name and shape only, not on
    the order in which a model creates its modules nor on which other
    entries exist. Values are chosen to keep activations of order one:
    fan-in scaled weights, norm weights near 1, positive running variances,
    layer scales of 0.1, non-trivial attention biases.

    The golden fixtures in ``tests/data`` were made by loading these weights
    into the official FcaFormer code and running it.

    Args:
        shapes (Mapping[str, Sequence[int]]): State-dict names and shapes,
            e.g. from :func:`shapes_of`.
        seed (int): The seed shared by all entries.

    Returns:
        dict[str, torch.Tensor]: float32 tensors (``num_batches_tracked``:
        zeros of dtype long), keyed as ``shapes``.
    """
    out = {}
    for key in sorted(shapes):
        shape = tuple(shapes[key])
        name = key.rsplit('.', 1)[-1]
        if name == 'num_batches_tracked':
            out[key] = torch.zeros(shape, dtype=torch.long)
            continue
        gen = torch.Generator().manual_seed(seed * 2**32 +
                                            zlib.crc32(key.encode()))
        noise = torch.randn(shape, generator=gen)
        if name == 'running_var':
            value = 0.5 + noise.abs()
        elif name == 'running_mean':
            value = 0.1 * noise
        elif name.startswith('gamma'):
            value = 0.1 + 0.05 * noise
        elif name == 's_scale_factors':
            value = 1 + 0.1 * noise
        elif name in ('attention_biases', 's_token_bias'):
            value = 0.5 * noise
        elif len(shape) == 1 and name == 'weight':
            value = 1 + 0.1 * noise
        elif len(shape) == 1:
            value = 0.02 * noise
        else:
            value = noise * math.prod(shape[1:])**-0.5
        out[key] = value
    return out


def seeded_input(shape: Sequence[int], seed: int) -> torch.Tensor:
    """Standard-normal float32 images of ``shape`` from their own generator.

    Args:
        shape (Sequence[int]): Usually ``(B, C, H, W)``.
        seed (int): Seed of the generator.

    Returns:
        torch.Tensor: The images, on the CPU.
    """
    return torch.randn(tuple(shape),
                       generator=torch.Generator().manual_seed(seed))


def shapes_of(module: nn.Module) -> dict[str, torch.Size]:
    """Names and shapes of ``module``'s state dict.

    Args:
        module (nn.Module): Any module (on the meta device too).

    Returns:
        dict[str, torch.Size]: What :func:`seeded_state_dict` takes.
    """
    return {key: value.shape for key, value in module.state_dict().items()}


def seeded_model(arch: str | dict = 'l1',
                 seed: int = 3,
                 jitter_seed: int | None = None,
                 **kwargs) -> nn.Module:
    """An FcaFormer with :func:`seeded_state_dict` weights, in eval mode.

    Seeded weights give non-trivial BatchNorm statistics, layer scales and
    attention biases, so every folded or fused quantity matters.

    Args:
        arch (str | dict): The backbone's ``arch``. Defaults to ``'l1'``.
        seed (int): Seed of the weights. Defaults to 3.
        jitter_seed (int, optional): When given, every floating-point tensor
            is moved by noise ``0.2 * N(0, 1)`` drawn from this seed
            (running variances kept positive), so that models of different
            ``jitter_seed`` differ everywhere. Defaults to None.
        **kwargs: Further arguments of ``FcaFormer``.

    Returns:
        nn.Module: The model, in eval mode.
    """
    from fcaformer_mm.models.backbones.fcaformer import FcaFormer

    model = FcaFormer(arch, **kwargs)
    state = seeded_state_dict(shapes_of(model), seed)
    if jitter_seed is not None:
        gen = torch.Generator().manual_seed(jitter_seed)
        for key, value in state.items():
            if value.is_floating_point():
                value += 0.2 * torch.randn(value.shape, generator=gen)
                if key.endswith('running_var'):
                    value.abs_().add_(0.1)
    model.load_state_dict(state)
    return model.eval()
