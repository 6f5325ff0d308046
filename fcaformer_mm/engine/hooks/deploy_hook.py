"""Switch FcaFormer backbones to their deployed (folded) form for testing."""
from __future__ import annotations

import logging

from mmengine.hooks import EMAHook, Hook
from mmengine.logging import print_log
from torch import nn


def switch_to_deploy(model: nn.Module) -> int:
    """Call ``switch_to_deploy()`` on every FcaFormer inside ``model``.

    Args:
        model (nn.Module): Any model (a segmentor, a detector, a classifier,
            a test-time-augmentation or distributed wrapper).

    Returns:
        int: How many backbones were switched (already deployed ones are
        not counted).
    """
    from fcaformer_mm.models.backbones.fcaformer import FcaFormer

    switched = 0
    for module in model.modules():
        if isinstance(module, FcaFormer) and not module.deployed:
            module.switch_to_deploy()
            switched += 1
    return switched


class SwitchToDeployHook(Hook):
    """Fold FcaFormer's Conv-BN layers and layer scales once, before testing.

    It runs after the checkpoint is loaded (``before_test``), so the folded
    weights are those of the checkpoint. It does nothing, saying why, when
    a hook that swaps weights in and out of the model (mmengine's
    ``EMAHook`` and its subclasses) is registered: that hook copies
    unfolded weights into the model, so the model must stay unfolded (and
    folds per forward instead, computing the same numbers).
    """

    priority = 'LOWEST'

    def before_test(self, runner) -> None:
        swappers = [
            type(hook).__name__ for hook in runner.hooks
            if isinstance(hook, EMAHook)
        ]
        if swappers:
            print_log(
                'FcaFormer stays undeployed for testing: '
                f'{", ".join(swappers)} swaps weights in and out of the '
                'model.',
                logger='current',
                level=logging.INFO)
            return
        switched = switch_to_deploy(runner.model)
        if switched:
            print_log(
                f'Switched {switched} FcaFormer backbone(s) to deploy mode '
                '(Conv-BN and layer scales folded) for testing.',
                logger='current')
