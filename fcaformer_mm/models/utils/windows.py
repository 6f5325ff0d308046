"""Window partition, index and mask helpers of FcaFormer's attention blocks.

The index tensors depend on shapes only (and are kept for the last few
shapes); nothing derived from weights is kept.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F


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


@functools.lru_cache(maxsize=8)
def shared_offset_index(window_size: int) -> torch.Tensor:
    """:func:`relative_offset_index`, one tensor per window size: the
    ``attention_bias_idxs`` buffer that all blocks of that window share
    (a non-persistent buffer that depends on the window size only; it must
    not be modified)."""
    return relative_offset_index(window_size)


def _compute_bias_index(heads: int, window_size: int,
                        device: torch.device) -> torch.Tensor:
    tokens = window_size**2
    offsets = relative_offset_index(window_size).to(device, torch.int32)
    heads_start = torch.arange(
        0, heads * tokens, tokens, dtype=torch.int32, device=device)
    return (heads_start.view(-1, 1) + offsets.view(1, -1)).view(-1)


# Thread-safe and bounded; one entry per (heads, window) of a model's stages.
_cached_bias_index = functools.lru_cache(maxsize=16)(_compute_bias_index)


def _flat_index_applies(index: torch.Tensor, tokens: int) -> bool:
    """Whether the cached shape-only indices may replace ``index``: eager
    (not compiling or tracing), and ``index`` the ``(N, N)`` offset index of
    a square window of ``N = tokens`` positions."""
    return not (torch.compiler.is_compiling() or torch.jit.is_tracing()
                or index.shape != (tokens, tokens)
                or math.isqrt(tokens)**2 != tokens)


def gather_bias(biases: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``biases[:, index]``: the relative position bias of every pair of
    window positions, ``(heads, N, N)`` from a ``(heads, N)`` table and
    ``index``, the ``(N, N)`` :func:`relative_offset_index` of the window.

    Outside of compilation and tracing it is one ``index_select`` on the
    flattened table with a flattened ``int32`` index (kept for the last few
    shapes: it depends on the shapes only), about 4 times faster on the CPU
    than advanced indexing; the numbers are the same.
    """
    heads, tokens = biases.shape
    if not _flat_index_applies(index, tokens):
        return biases[:, index]
    flat = _cached_bias_index(heads, math.isqrt(tokens), index.device)
    return biases.reshape(-1).index_select(0, flat).view(
        heads, tokens, tokens)


def partition(x: torch.Tensor, rows: int, cols: int, ws: int,
              pad: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """``(B, rows*ws, cols*ws, C)`` -> ``(B*rows*cols, ws*ws, C)`` windows.

    With ``pad`` (``(top, bottom, left, right)``), ``x`` is first zero-padded
    by that many rows and columns to ``(B, rows*ws, cols*ws, C)``.
    """
    if pad is not None:
        top, bottom, left, right = pad
        x = F.pad(x, (0, 0, left, right, top, bottom))
    batch, channels = x.shape[0], x.shape[-1]
    if rows == cols == 1:
        return x.reshape(batch, ws * ws, channels)
    return x.reshape(batch, rows, ws, cols, ws, channels).permute(
        0, 1, 3, 2, 4, 5).reshape(batch * rows * cols, ws * ws, channels)


def merge(x: torch.Tensor, batch: int, rows: int, cols: int, ws: int,
          crop: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """Inverse of :func:`partition`: windows back to a ``(B, H, W, C)`` map,
    cropped to ``crop`` (``(top, left, height, width)``) if given."""
    channels = x.shape[-1]
    if rows == cols == 1:
        x = x.reshape(batch, ws, ws, channels)
    else:
        x = x.reshape(batch, rows, cols, ws, ws, channels).permute(
            0, 1, 3, 2, 4, 5).reshape(batch, rows * ws, cols * ws, channels)
    if crop is None:
        return x
    top, left, height, width = crop
    return x[:, top:top + height, left:left + width]


def _compute_mask_index(window_size: int, capacity: int,
                        device: torch.device) -> torch.Tensor:
    tokens = window_size**2
    cross = torch.arange(tokens, tokens + capacity).expand(tokens, capacity)
    return torch.cat((relative_offset_index(window_size), cross),
                     dim=1).to(device)


# Thread-safe and bounded; one entry per window size and power-of-two
# capacity of cross keys.
_cached_mask_index = functools.lru_cache(maxsize=16)(_compute_mask_index)


def attention_mask(biases: torch.Tensor,
                   index: torch.Tensor,
                   token_bias: torch.Tensor | None = None,
                   dtype: torch.dtype | None = None) -> torch.Tensor:
    """The additive attention mask of an FCA block, ``(1, heads, N, N +
    num_cross)``, computed from its current parameters (nothing is kept).

    With cross keys, outside of compilation and tracing, the mask is one
    ``gather`` from the table of both biases (``attention_biases`` then
    ``s_token_bias``, a few KiB) by an index that depends on the window size
    only (kept for the last few shapes): this writes the mask once, where
    gathering the position bias and then concatenating the cross-key bias
    writes most of it twice. The numbers are the same.

    Args:
        biases (torch.Tensor): ``(heads, N)`` relative position bias table
            (``attention_biases``).
        index (torch.Tensor): ``(N, N)`` :func:`relative_offset_index`.
        token_bias (torch.Tensor, optional): ``(1, heads, 1, num_cross)``
            logit bias of the cross keys (``s_token_bias``). Defaults to
            None (no cross keys).
        dtype (torch.dtype, optional): Defaults to that of ``biases``.
    """
    heads, tokens = biases.shape
    if token_bias is not None and _flat_index_applies(index, tokens):
        num_cross = token_bias.shape[-1]
        capacity = 1 << (num_cross - 1).bit_length()
        full = _cached_mask_index(math.isqrt(tokens), capacity, index.device)
        width = tokens + num_cross
        table = torch.cat((biases, token_bias.reshape(heads, num_cross)), 1)
        mask = table[:, None].expand(heads, tokens, width).gather(
            2, full[None, :, :width].expand(heads, -1, -1))
    else:
        mask = gather_bias(biases, index)
        if token_bias is not None:
            mask = torch.cat(
                (mask, token_bias[0].expand(-1, tokens, -1)), dim=-1)
    mask = mask.unsqueeze(0)
    return mask if dtype in (None, mask.dtype) else mask.to(dtype)


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
