"""Checks of FcaFormer's arguments and inputs, with errors that say the fix."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from numbers import Integral

import torch

ARCH_KEYS = ('embed_dims', 'depths', 'num_heads')


def is_int(value: object) -> bool:
    """An integer that is not a bool."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_sequence(value: object) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def parse_arch(arch: str | Mapping, arch_zoo: Mapping[str, Mapping]) -> dict:
    """A preset of ``arch_zoo`` by name (any case), or a checked dict."""
    choices = ', '.join(sorted(arch_zoo))
    if isinstance(arch, str):
        if arch.lower() not in arch_zoo:
            raise ValueError(f'Unavailable arch {arch!r}, please choose from '
                             f'({choices}) or pass a dict.')
        return dict(arch_zoo[arch.lower()])
    if not isinstance(arch, Mapping):
        # ValueError, not TypeError: callers catch one error for any
        # unusable arch, as with mmpretrain's backbones.
        raise ValueError(  # noqa: TRY004
            f'Unavailable arch {arch!r}, please choose from ({choices}) or '
            'pass a dict.')
    missing = [key for key in ARCH_KEYS if key not in arch]
    if missing:
        raise ValueError(f'The arch dict misses the keys {missing}; it needs '
                         f'{list(ARCH_KEYS)}.')
    if len(arch['embed_dims']) != 4 or len(arch['depths']) != 4:
        raise ValueError('arch "embed_dims" and "depths" must have 4 '
                         f'entries, got {list(arch["embed_dims"])} and '
                         f'{list(arch["depths"])}.')
    if len(arch['num_heads']) not in (2, 4):
        raise ValueError('arch "num_heads" must give the heads of stages 2 '
                         f'and 3, got {list(arch["num_heads"])}.')
    if min(arch['depths']) < 1:
        raise ValueError('Every stage needs at least one block, got depths '
                         f'{list(arch["depths"])}.')
    return dict(arch)


def parse_out_indices(out_indices: int | Sequence[int] | None,
                      num_stages: int, only_last: bool) -> tuple[int, ...]:
    """Sorted, non-negative, unique output stages.

    Args:
        out_indices (int | Sequence[int], optional): Stages, negative from
            the end; None for all (or the last one if ``only_last``).
        num_stages (int): Number of stages.
        only_last (bool): Only the last stage may be given.
    """
    last = num_stages - 1
    if out_indices is None:
        return (last, ) if only_last else tuple(range(num_stages))
    given = [out_indices] if is_int(out_indices) else out_indices
    if not _is_sequence(given) or not given or not all(
            is_int(i) for i in given):
        raise ValueError('out_indices must be an int or a non-empty sequence '
                         f'of ints (stages 0-{last}, negative from the end), '
                         f'got {out_indices!r}.')
    normalised = []
    for index in given:
        value = index + num_stages if index < 0 else index
        if not 0 <= value <= last:
            raise ValueError(f'Invalid out_indices {index}: there are '
                             f'{num_stages} stages.')
        normalised.append(int(value))
    normalised = tuple(sorted(set(normalised)))
    if only_last and normalised != (last, ):
        raise ValueError("out_type='avg_featmap' outputs the last stage "
                         f'only; got out_indices={out_indices!r}.')
    return normalised


def check_window_sizes(window_sizes: Sequence[int]) -> list[int]:
    """Two positive ints, the windows of stages 2 and 3."""
    if (not _is_sequence(window_sizes) or len(window_sizes) != 2
            or not all(is_int(w) and w >= 1 for w in window_sizes)):
        raise ValueError('window_sizes must be two positive ints (the '
                         'attention windows of stages 2 and 3, e.g. (14, '
                         f'7)), got {window_sizes!r}.')
    return [int(w) for w in window_sizes]


def check_drop_path_rate(rate: float) -> float:
    """A number in [0, 1)."""
    if isinstance(rate, bool) or not isinstance(
            rate, (int, float)) or not 0 <= rate < 1:
        raise ValueError('drop_path_rate must be a number in [0, 1) (the '
                         f'official configs use 0 to 0.4), got {rate!r}.')
    return float(rate)


def check_images(x: torch.Tensor, in_channels: int,
                 weight: torch.Tensor) -> None:
    """``(B, in_channels, H, W)`` float images of the weights' dtype (or
    any float dtype under autocast)."""
    if x.dim() != 4 or x.shape[1] != in_channels:
        raise ValueError(f'FcaFormer expects (B, {in_channels}, H, W) images, '
                         f'got a tensor of shape {tuple(x.shape)}.')
    if not torch.jit.is_tracing() and x.shape[0] == 0:
        raise ValueError('FcaFormer got an empty batch (0 images): call it '
                         'with at least one image.')
    if not x.is_floating_point():
        raise TypeError(
            f'FcaFormer got {x.dtype} images; it takes normalised float '
            'images: convert them with x.float() and normalise them (the '
            "configs' data_preprocessor does both).")
    if x.dtype != weight.dtype and not autocast_on(x.device.type):
        raise TypeError(
            f'FcaFormer got {x.dtype} images but its weights are '
            f'{weight.dtype}: cast the images with x.to({weight.dtype}), '
            f'convert the model with model.to({x.dtype}), or run it under '
            f"torch.autocast('{x.device.type}', dtype={x.dtype}).")


def autocast_on(device_type: str) -> bool:
    """Whether autocast is enabled for ``device_type``."""
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4
        return device_type == 'cpu' and torch.is_autocast_cpu_enabled()
