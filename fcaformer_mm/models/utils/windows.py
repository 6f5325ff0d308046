"""Window partition and index helpers of FcaFormer's attention blocks.

Everything here depends on shapes only, never on weights.
"""
from __future__ import annotations

import functools

import torch


def relative_offset_index(window_size: int) -> torch.Tensor:
    """Index of the (|dy|, |dx|) offset of every pair of window positions.

    The official code numbers the offsets in their order of first
    appearance while scanning all pairs; the first query position (0, 0)
    already meets every offset, in row-major order, so that number is
    ``|dy| * window_size + |dx|``.

    Args:
        window_size (int): Side of the square window.

    Returns:
        torch.Tensor: ``(window_size**2, window_size**2)`` long tensor.
    """
    coords = torch.arange(window_size)
    ys, xs = torch.meshgrid(coords, coords, indexing='ij')
    ys, xs = ys.flatten(), xs.flatten()
    dy = (ys[:, None] - ys[None, :]).abs()
    dx = (xs[:, None] - xs[None, :]).abs()
    return dy * window_size + dx


def partition(x: torch.Tensor, rows: int, cols: int, ws: int) -> torch.Tensor:
    """``(B, rows*ws, cols*ws, C)`` -> ``(B*rows*cols, ws*ws, C)`` windows."""
    batch, channels = x.shape[0], x.shape[-1]
    return x.reshape(batch, rows, ws, cols, ws, channels).permute(
        0, 1, 3, 2, 4, 5).reshape(batch * rows * cols, ws * ws, channels)


def merge(x: torch.Tensor, batch: int, rows: int, cols: int,
          ws: int) -> torch.Tensor:
    """Inverse of :func:`partition`: windows back to a ``(B, H, W, C)`` map."""
    channels = x.shape[-1]
    return x.reshape(batch, rows, cols, ws, ws, channels).permute(
        0, 1, 3, 2, 4, 5).reshape(batch, rows * ws, cols * ws, channels)


def split_heads(qkv: torch.Tensor, kv: torch.Tensor | None, heads: int):
    """``(nW, T, 3C)`` and ``(nW, n, 2C)`` to queries, keys and values of
    shape ``(nW, heads, tokens, head_dim)``, cross keys after window keys."""
    num_windows, tokens, width = qkv.shape
    head_dim = width // 3 // heads
    q, k, v = qkv.reshape(num_windows, tokens, 3, heads,
                          head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    if kv is not None:
        k_s, v_s = kv.reshape(num_windows, -1, 2, heads,
                              head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        k, v = torch.cat((k, k_s), dim=2), torch.cat((v, v_s), dim=2)
    return q, k, v


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


# Thread-safe and bounded; the indices depend on the shapes only.
_cached_window_indices = functools.lru_cache(maxsize=32)(
    _compute_window_indices)


def window_indices(batch: int, height: int, width: int, ws: int, top: int,
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
    cropping back. The last few sizes are kept (outside of compilation);
    the returned tensors must not be modified.
    """
    if torch.compiler.is_compiling():
        return _compute_window_indices(batch, height, width, ws, top, left,
                                       device)
    return _cached_window_indices(batch, height, width, ws, top, left,
                                  torch.device(device))
