"""FcaFormer's layer-wise learning-rate decay rules: the one source.

The official fine-tuning recipes give every parameter a layer id from its
name (``backbone.patch_embed``, ``backbone.layer_{i}.blocks.{j}``,
``backbone.layer_{i}.downsample``, the cross-token parameters
``s_scale_factors`` and ``s_token_bias``); the learning rate of layer id
``k`` is ``lr * rate ** (num_layers + 1 - k)``. Both the backbone's
``get_layer_depth`` (used by mmpretrain's generic constructor) and
:class:`~fcaformer_mm.engine.optimizers.FcaFormerLayerDecayOptimWrapperConstructor`
use the functions here.
"""
from __future__ import annotations

import re

from torch import nn

# `backbone.layer_{stage}.{op}[.{index}]...`
_STAGE_NAME = re.compile(r'^backbone\.layer_(\d+)\.([^.]+)(?:\.(\d+))?')


def _is_cross_token_param(name: str) -> bool:
    """Whether ``name`` is a learned scale or bias of the cross tokens."""
    return 's_scale_factors' in name or 's_token_bias' in name


def _parse_stage_name(name: str) -> tuple[int, str, int | None]:
    """Split ``backbone.layer_{i}.{blocks|downsample}...`` into its parts.

    Args:
        name (str): A parameter name that starts with ``backbone.layer_``.

    Returns:
        tuple: The stage index, the op (``'blocks'`` or ``'downsample'``) and
        the block index (None where the name has none).

    Raises:
        ValueError: Where the name is not one of FcaFormer's stage names: the
            official rule has no layer id for it (it fails on such names).
    """
    match = _STAGE_NAME.match(name)
    if match is None or match.group(2) not in ('blocks', 'downsample'):
        raise ValueError(
            f'Cannot assign a layer id to parameter "{name}": FcaFormer '
            'layer-wise lr decay expects names '
            '"backbone.layer_<i>.blocks.<j>..." or '
            '"backbone.layer_<i>.downsample...".')
    block = match.group(3)
    return (int(match.group(1)), match.group(2),
            None if block is None else int(block))


def get_layer_id_stage_wise(name: str, num_layers: int) -> int:
    """Layer id of a parameter under the official ``stage_wise`` rule.

    - ``backbone.patch_embed*``: 0;
    - any name containing ``s_scale_factors`` or ``s_token_bias``: 0;
    - ``backbone.layer_{i}.blocks*``: ``i + 1``;
    - ``backbone.layer_{i}.downsample*``: 0;
    - everything else (output heads and norms of the backbone, neck, decode
      heads): ``num_layers + 1``, i.e. the full learning rate.

    Args:
        name (str): Parameter name in the whole model, e.g.
            ``'backbone.layer_2.blocks.3.qkv.weight'``.
        num_layers (int): ``paramwise_cfg['num_layers']``.

    Returns:
        int: The layer id.
    """
    if name.startswith('backbone.patch_embed') or _is_cross_token_param(name):
        return 0
    if name.startswith('backbone.layer_'):
        stage, op, _ = _parse_stage_name(name)
        return stage + 1 if op == 'blocks' else 0
    return num_layers + 1


def get_layer_id_layer_wise_cab(name: str, num_layers: int) -> int:
    """Layer id of a parameter under the official ``layer_wise_cab`` rule.

    - ``backbone.patch_embed*``, ``s_scale_factors``, ``s_token_bias``: 0;
    - blocks of stage 0: 1; of stage 1: 2; block ``k`` of stage 2:
      ``3 + k // 3``; of stage 3: ``num_layers``;
    - ``downsample`` after stage 0: 0; after stage 1: 2; after stage 2: 3;
      of stage 3 (FcaFormer has none): ``num_layers``;
    - everything else: ``num_layers + 1``, i.e. the full learning rate.

    Args:
        name (str): Parameter name in the whole model.
        num_layers (int): ``paramwise_cfg['num_layers']``.

    Returns:
        int: The layer id.

    Raises:
        ValueError: For a stage index above 3, which the official rule does
            not cover.
    """
    if name.startswith('backbone.patch_embed') or _is_cross_token_param(name):
        return 0
    if not name.startswith('backbone.layer_'):
        return num_layers + 1
    stage, op, block = _parse_stage_name(name)
    if op == 'blocks':
        if stage == 2:
            if block is None:
                raise ValueError(f'Parameter "{name}" has no block index.')
            return 3 + block // 3
        ids = {0: 1, 1: 2, 3: num_layers}
    else:
        ids = {0: 0, 1: 2, 2: 3, 3: num_layers}
    if stage not in ids:
        raise ValueError(
            f'Cannot assign a layer id to parameter "{name}": the '
            '"layer_wise_cab" rule covers stages 0 to 3 only.')
    return ids[stage]


def is_no_decay(name: str, param: nn.Parameter, rule: str) -> bool:
    """Whether a parameter gets no weight decay under the official rule.

    Both rules exempt parameters with one dimension, names ending in
    ``.bias`` and the names ``pos_embed`` and ``cls_token``. The
    ``'segmentation'`` rule also exempts names ending in ``token_bias`` or
    ``_biases`` (``s_token_bias``, ``attention_biases``) and any name that
    contains ``norm``.

    Args:
        name (str): Parameter name in the whole model.
        param (nn.Parameter): The parameter.
        rule (str): ``'segmentation'`` or ``'detection'``.

    Returns:
        bool: True where the weight decay of the parameter is 0.
    """
    if (param.ndim == 1 or name.endswith('.bias')
            or name in ('pos_embed', 'cls_token')):
        return True
    if rule == 'segmentation':
        return name.endswith(('token_bias', '_biases')) or 'norm' in name
    return False



def num_decay_layers(stage2_depth: int) -> int:
    """``num_layers`` of the ``layer_wise_cab`` rule for a backbone.

    Layer ids 1 and 2 are stages 0 and 1, ids 3.. hold three blocks of stage
    2 each, and stage 3 gets the id after them: 6 for L2 (7 blocks in stage
    2), the value of the official dense configs.

    Args:
        stage2_depth (int): Blocks in stage 2.
    """
    return 4 + (stage2_depth - 1) // 3
