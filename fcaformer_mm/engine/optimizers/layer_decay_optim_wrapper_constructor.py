"""Layer-wise learning-rate decay for FcaFormer (OpenMMLab 2.0).

The FcaFormer authors fine-tune their dense-prediction models with a
layer-wise learning-rate decay whose rule is written for the parameter names
of FcaFormer (``backbone.patch_embed``, ``backbone.layer_{i}.blocks``,
``backbone.layer_{i}.downsample``, the cross-token parameters
``s_scale_factors`` and ``s_token_bias``). mmseg's and mmdet's own
``LearningRateDecayOptimizerConstructor`` only know the ConvNeXt and BEiT
names, and mmengine's default constructor silently ignores the keys, so this
module brings the official rule to the OpenMMLab 2.0 optimizer wrappers.
"""
from __future__ import annotations

import logging
from numbers import Real

from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor
from torch import nn

from fcaformer_mm.models.utils.layer_decay import (
    get_layer_id_layer_wise_cab,
    get_layer_id_stage_wise,
    is_no_decay,
)
from fcaformer_mm.registry import OPTIM_WRAPPER_CONSTRUCTORS

#: The decay types of the official constructor that fit FcaFormer.
DECAY_TYPES = ('stage_wise', 'layer_wise_cab')

#: Which parameters get no weight decay. The two copies of the official
#: constructor differ here: the one of ``semantic-segmentation`` also exempts
#: names ending in ``token_bias`` or ``_biases`` and names containing
#: ``norm``; the one of ``object_detection`` does not.
NO_DECAY_RULES = ('segmentation', 'detection')

#: The rule each decay type was published with: ``stage_wise`` ran from the
#: segmentation copy (UperNet, ADE20K), ``layer_wise_cab`` only exists in the
#: detection copy (Mask R-CNN and Cascade Mask R-CNN, COCO).
DEFAULT_NO_DECAY_RULES = {
    'stage_wise': 'segmentation',
    'layer_wise_cab': 'detection',
}

_PARAMWISE_KEYS = ('num_layers', 'decay_rate', 'layer_decay_rate',
                   'decay_type', 'no_decay_rule')

_LAYER_ID_FUNCS = {
    'stage_wise': get_layer_id_stage_wise,
    'layer_wise_cab': get_layer_id_layer_wise_cab,
}


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class FcaFormerLayerDecayOptimWrapperConstructor(
        DefaultOptimWrapperConstructor):
    """Optimizer-wrapper constructor with FcaFormer's layer-wise lr decay.

    It keeps the rule of the official FcaFormer code (``mmcv_custom/
    layer_decay_optimizer_constructor.py``) for the OpenMMLab 2.0 stack.
    Every trainable parameter of the model (frozen ones are left out, as
    upstream) is given a layer id from its name in the whole model, see
    :func:`get_layer_id_stage_wise` and :func:`get_layer_id_layer_wise_cab`,
    and goes to the group ``layer_{id}_decay`` or ``layer_{id}_no_decay``
    (see :func:`is_no_decay`). A group's learning rate is
    ``lr * decay_rate ** (num_layers + 1 - id)``, so the parameters outside
    the backbone's stages (id ``num_layers + 1``) keep the base learning
    rate. Its weight decay is the optimizer's, or 0 for the no-decay groups.

    The optimizer and the wrapper are built by mmengine's ``OPTIMIZERS`` and
    ``OPTIM_WRAPPERS`` registries in the current default scope, so any
    optimizer and wrapper (``OptimWrapper``, ``AmpOptimWrapper``) of mmengine
    or of the host codebase can be used. The groups are logged once, as a
    table; their parameter names are logged at DEBUG level.

    ``paramwise_cfg`` takes these keys (and no others: mmengine's
    ``custom_keys``, ``bias_decay_mult`` and the like are not applied by the
    official rule, so they are refused rather than silently ignored):

    - ``num_layers`` (int): required; 6 in all official configs.
    - ``decay_rate`` (float): required; the decay per layer id.
      ``layer_decay_rate`` (the key of mmpretrain's constructor) is accepted
      as an alias. The official configs use ``decay_rate``, ``decay_type``
      and ``num_layers``, so they translate key for key.
    - ``decay_type`` (str): required; ``'stage_wise'`` (official UperNet
      ADE20K config) or ``'layer_wise_cab'`` (official Mask R-CNN and Cascade
      Mask R-CNN COCO configs).
    - ``no_decay_rule`` (str): ``'segmentation'`` or ``'detection'``, the
      weight-decay exemptions of the official segmentation or detection code
      (see :func:`is_no_decay`). Defaults to the copy each decay type was
      published with: ``'segmentation'`` for ``'stage_wise'``,
      ``'detection'`` for ``'layer_wise_cab'``.

    Args:
        optim_wrapper_cfg (dict): Config of the optimizer wrapper, with its
            ``optimizer`` config (which must give ``lr``).
        paramwise_cfg (dict, optional): The keys above. Defaults to None,
            which is refused because ``num_layers`` is required.

    Example:
        >>> # the official UperNet ADE20K recipe, OpenMMLab 2.0 style
        >>> optim_wrapper = dict(
        ...     type='AmpOptimWrapper',
        ...     optimizer=dict(
        ...         type='AdamW', lr=1e-4, betas=(0.9, 0.999),
        ...         weight_decay=0.01),
        ...     constructor='FcaFormerLayerDecayOptimWrapperConstructor',
        ...     paramwise_cfg=dict(
        ...         decay_rate=0.9, decay_type='stage_wise', num_layers=6))
        >>> # Mask R-CNN 3x COCO: decay_rate=0.95, 'layer_wise_cab',
        >>> # num_layers=6, with AdamW lr 1e-4 and weight decay 0.05.

    The bare name resolves in the scopes the package registers it in (the
    installed hosts, see :mod:`fcaformer_mm.hosts`);
    ``'fcaformer_mm.FcaFormerLayerDecayOptimWrapperConstructor'`` resolves
    from any default scope.
    """

    def __init__(self,
                 optim_wrapper_cfg: dict,
                 paramwise_cfg: dict | None = None) -> None:
        super().__init__(optim_wrapper_cfg, paramwise_cfg)
        cfg = self.paramwise_cfg
        unknown = sorted(set(cfg) - set(_PARAMWISE_KEYS))
        if unknown:
            raise ValueError(
                f'Unsupported paramwise_cfg keys {unknown} for '
                f'{type(self).__name__}: it accepts only '
                f'{list(_PARAMWISE_KEYS)}.')
        self.num_layers = self._parse_num_layers(cfg)
        self.decay_rate = self._parse_decay_rate(cfg)
        self.decay_type = cfg.get('decay_type')
        if self.decay_type not in DECAY_TYPES:
            raise ValueError(
                'paramwise_cfg["decay_type"] is required and must be one of '
                f'{DECAY_TYPES}, but got {self.decay_type!r}.')
        self.no_decay_rule = cfg.get('no_decay_rule',
                                     DEFAULT_NO_DECAY_RULES[self.decay_type])
        if self.no_decay_rule not in NO_DECAY_RULES:
            raise ValueError(
                'paramwise_cfg["no_decay_rule"] must be one of '
                f'{NO_DECAY_RULES}, but got {self.no_decay_rule!r}.')
        if not isinstance(self.base_lr, Real):
            raise TypeError(
                'The optimizer config must give a number "lr" for layer-wise '
                f'lr decay, but got {self.base_lr!r}.')

    @staticmethod
    def _parse_num_layers(cfg: dict) -> int:
        if 'num_layers' not in cfg:
            raise ValueError(
                'paramwise_cfg["num_layers"] is required for FcaFormer '
                'layer-wise lr decay (the official configs use 6), e.g. '
                'paramwise_cfg=dict(num_layers=6, decay_rate=0.9, '
                "decay_type='stage_wise').")
        num_layers = cfg['num_layers']
        if not isinstance(num_layers, int) or isinstance(num_layers, bool):
            raise TypeError('paramwise_cfg["num_layers"] must be an int, but '
                            f'got {num_layers!r}.')
        if num_layers < 1:
            raise ValueError('paramwise_cfg["num_layers"] must be positive, '
                             f'but got {num_layers}.')
        return num_layers

    @staticmethod
    def _parse_decay_rate(cfg: dict) -> float:
        rates = {
            key: cfg[key]
            for key in ('decay_rate', 'layer_decay_rate') if key in cfg
        }
        if not rates:
            raise ValueError(
                'paramwise_cfg["decay_rate"] (or its alias '
                '"layer_decay_rate") is required.')
        if len(set(rates.values())) > 1:
            raise ValueError(
                'paramwise_cfg gives "decay_rate" and its alias '
                f'"layer_decay_rate" with different values: {rates}.')
        rate = next(iter(rates.values()))
        if not isinstance(rate, Real) or isinstance(rate, bool):
            raise TypeError('The layer decay rate must be a number, but got '
                            f'{rate!r}.')
        if rate <= 0:
            raise ValueError('The layer decay rate must be positive, but got '
                             f'{rate}.')
        return float(rate)

    def get_layer_id(self, name: str) -> int:
        """Layer id of the parameter called ``name`` in the whole model."""
        return _LAYER_ID_FUNCS[self.decay_type](name, self.num_layers)

    def get_lr_scale(self, layer_id: int) -> float:
        """Learning-rate scale of a layer id.

        Upstream writes it ``rate ** (num_layers + 2 - id - 1)``.
        """
        return self.decay_rate**(self.num_layers + 1 - layer_id)

    def add_params(self,
                   params: list[dict],
                   module: nn.Module,
                   prefix: str = '',
                   is_dcn_module: float | None = None) -> None:
        """Add the parameter groups of ``module`` to ``params``.

        Unlike the default constructor this does not recurse: the groups
        follow from the names of all parameters of ``module``, which should
        be the whole model (what ``__call__`` passes).

        Args:
            params (list[dict]): Parameter groups, extended in place. Each
                new group holds ``params``, ``lr``, ``weight_decay`` (left
                out, so the optimizer's default applies, for the decay groups
                when the optimizer config gives none), ``lr_scale``,
                ``layer_id``, ``group_name`` and ``param_names``.
            module (nn.Module): The model.
            prefix (str): Prefix of the names of ``module``'s parameters in
                the whole model. Defaults to ''.
            is_dcn_module (int | float, optional): Unused, kept for the
                signature of the default constructor. Defaults to None.
        """
        groups: dict[str, dict] = {}
        frozen = [0, 0]
        for name, param in module.named_parameters():
            if prefix:
                name = f'{prefix}.{name}'
            if not param.requires_grad:
                frozen[0] += 1
                frozen[1] += param.numel()
                continue
            no_decay = is_no_decay(name, param, self.no_decay_rule)
            layer_id = self.get_layer_id(name)
            group_name = (f'layer_{layer_id}_'
                          f'{"no_decay" if no_decay else "decay"}')
            if group_name not in groups:
                scale = self.get_lr_scale(layer_id)
                group = {
                    'params': [],
                    'param_names': [],
                    'lr': scale * self.base_lr,
                    'lr_scale': scale,
                    'layer_id': layer_id,
                    'group_name': group_name,
                }
                if no_decay:
                    group['weight_decay'] = 0.
                elif self.base_wd is not None:
                    group['weight_decay'] = self.base_wd
                groups[group_name] = group
            groups[group_name]['params'].append(param)
            groups[group_name]['param_names'].append(name)

        self._check_groups(groups)
        self._log_groups(groups, frozen)
        params.extend(groups.values())

    def _check_groups(self, groups: dict[str, dict]) -> None:
        """Warn about group layouts that point at a wrong config."""
        top_id = self.num_layers + 1
        if groups and all(g['layer_id'] == top_id for g in groups.values()):
            print_log(
                'FcaFormer layer-wise lr decay: no parameter matched the '
                'FcaFormer backbone names ("backbone.patch_embed", '
                '"backbone.layer_<i>.blocks", ...), so every parameter keeps '
                'the base learning rate.',
                logger='current',
                level=logging.WARNING)
        above = sorted({g['layer_id'] for g in groups.values()} -
                       set(range(top_id + 1)))
        if above:
            print_log(
                f'FcaFormer layer-wise lr decay: layer ids {above} exceed '
                f'num_layers + 1 = {top_id}, so their lr scale is above 1; '
                'num_layers is probably too small for this backbone.',
                logger='current',
                level=logging.WARNING)

    def _log_groups(self, groups: dict[str, dict], frozen: list[int]) -> None:
        """Log the groups as one table, and their names at DEBUG level."""
        header = ('group', 'layer id', 'lr scale', 'lr', 'weight decay',
                  'tensors', 'elements')
        rows = []
        totals = [0, 0]
        for group in groups.values():
            numel = sum(p.numel() for p in group['params'])
            totals[0] += len(group['params'])
            totals[1] += numel
            rows.append(
                (group['group_name'], str(group['layer_id']),
                 f'{group["lr_scale"]:.4g}', f'{group["lr"]:.4g}',
                 f'{group["weight_decay"]:.4g}'
                 if 'weight_decay' in group else 'default',
                 str(len(group['params'])), str(numel)))
        rows.append(('total', '', '', '', '', str(totals[0]), str(totals[1])))
        widths = [max(len(row[i]) for row in [header] + rows)
                  for i in range(len(header))]

        def fmt(row: tuple) -> str:
            return '  '.join(
                cell.ljust(width) if i == 0 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(row, widths)))

        title = (
            'FcaFormer layer-wise lr decay: '
            f'decay_type={self.decay_type}, decay_rate={self.decay_rate}, '
            f'num_layers={self.num_layers}, '
            f'no_decay_rule={self.no_decay_rule}, base lr={self.base_lr}, '
            f'base weight decay={self.base_wd}')
        lines = [title, fmt(header)]
        lines += [fmt(row) for row in rows]
        if frozen[0]:
            lines.append(f'frozen, left out: {frozen[0]} tensors, '
                         f'{frozen[1]} elements')
        print_log('\n'.join(lines), logger='current')
        print_log(
            '\n'.join(f'{name}: {", ".join(group["param_names"])}'
                      for name, group in groups.items()),
            logger='current',
            level=logging.DEBUG)
