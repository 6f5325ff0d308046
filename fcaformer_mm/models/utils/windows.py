"""Window partition and position-bias helpers of FcaFormer's FCA blocks.

Nothing here keeps state: the offset index depends on the window size only,
and the mask is computed from the parameters at every call.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def relative_offset_index(window_size: int,
                          device: torch.device | str = 'cpu') -> torch.Tensor:
    """Index of the (|dy|, |dx|) offset of every pair of window positions.

    The official code numbers the offsets in their order of first
    appearance while scanning all pairs; the first query position (0, 0)
    already meets every offset, in row-major order, so that number is
    ``|dy| * window_size + |dx|``.

    Args:
        window_size (int): Side of the square window.
        device (torch.device | str): Where to make it; it is always a
            real tensor (never a meta or inference tensor, whatever the
            calling context). Defaults to the CPU.

    Returns:
        torch.Tensor: ``(window_size**2, window_size**2)`` long tensor.
    """
    with torch.inference_mode(False), torch.no_grad():
        coords = torch.arange(window_size, device=device)
        ys, xs = torch.meshgrid(coords, coords, indexing='ij')
        ys, xs = ys.flatten(), xs.flatten()
        dy = (ys[:, None] - ys[None, :]).abs()
        dx = (xs[:, None] - xs[None, :]).abs()
        return dy * window_size + dx


def mask_index(window_size: int, num_cross: int = 0,
               device: torch.device | str = 'cpu') -> torch.Tensor:
    """The index that gathers an FCA block's attention mask from its bias
    table: :func:`relative_offset_index` ``(N, N)`` for the window keys,
    then one column per cross key pointing at that key's entry
    (``N + j``) of the table ``[attention_biases, s_token_bias]``.

    Args:
        window_size (int): Side of the square window (``N`` its area).
        num_cross (int): Cross keys. Defaults to 0.
        device (torch.device | str): Defaults to the CPU.

    Returns:
        torch.Tensor: ``(N, N + num_cross)`` int32 tensor (a real tensor,
        whatever the calling context).
    """
    tokens = window_size**2
    offsets = relative_offset_index(window_size, device)
    with torch.inference_mode(False), torch.no_grad():
        cross = torch.arange(tokens, tokens + num_cross, device=device)
        return torch.cat((offsets, cross.expand(tokens, num_cross)),
                         dim=1).to(torch.int32)


def attention_mask(biases: torch.Tensor,
                   index: torch.Tensor,
                   token_bias: torch.Tensor | None = None,
                   dtype: torch.dtype | None = None) -> torch.Tensor:
    """The additive attention mask of an FCA block, ``(1, heads, N, N +
    num_cross)``: the relative position bias of the window keys, then
    ``token_bias`` for the cross keys, gathered from the two tables by one
    ``index_select`` (the mask is written once, as it is large: 4.6 MiB for
    a 14x14 window, 16 heads and 176 cross keys).

    Args:
        biases (torch.Tensor): ``(heads, N)`` relative position bias table
            (``attention_biases``).
        index (torch.Tensor): ``(N, N + num_cross)`` :func:`mask_index`.
        token_bias (torch.Tensor, optional): ``(1, heads, 1, num_cross)``
            logit bias of the cross keys (``s_token_bias``). Defaults to
            None (no cross keys).
        dtype (torch.dtype, optional): Defaults to that of ``biases``.
    """
    heads = biases.shape[0]
    table = biases if token_bias is None else torch.cat(
        (biases, token_bias.reshape(heads, -1)), dim=1)
    mask = table.index_select(1, index.reshape(-1)).view(
        1, heads, *index.shape)
    return mask if dtype in (None, mask.dtype) else mask.to(dtype)


def partition(x: torch.Tensor, rows: int, cols: int, ws: int,
              pad: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """``(B, rows*ws, cols*ws, C)`` -> ``(B*rows*cols, ws*ws, C)`` windows.

    With ``pad`` (``(top, bottom, left, right)``), ``x`` is first zero-padded
    by that many rows and columns to ``(B, rows*ws, cols*ws, C)`` (always
    padded, zeros included, so that a traced graph pads any input size).
    """
    if pad is not None:
        top, bottom, left, right = pad
        x = F.pad(x, (0, 0, left, right, top, bottom))
    batch, channels = x.shape[0], x.shape[-1]
    return x.reshape(batch, rows, ws, cols, ws, channels).transpose(
        2, 3).reshape(batch * rows * cols, ws * ws, channels)


def merge(x: torch.Tensor, batch: int, rows: int, cols: int, ws: int,
          crop: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """Inverse of :func:`partition`: ``(B*rows*cols, ws, ws, C)`` windows
    back to a ``(B, H, W, C)`` map, cropped to ``crop`` (``(top, left,
    height, width)``) if given."""
    channels = x.shape[-1]
    x = x.reshape(batch, rows, cols, ws, ws, channels).transpose(
        2, 3).reshape(batch, rows * ws, cols * ws, channels)
    if crop is None:
        return x
    top, left, height, width = crop
    return x[:, top:top + height, left:left + width]


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
