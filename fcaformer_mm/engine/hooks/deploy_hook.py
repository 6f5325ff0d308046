"""Switch FcaFormer backbones to their deployed (folded) form for testing."""
from __future__ import annotations

import logging
from collections.abc import Iterable

from mmengine.hooks import EMAHook, Hook
from mmengine.logging import print_log
from torch import nn


class DeployError(RuntimeError):
    """Deploying would make the test score other weights than it says."""


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


def weight_swapping_hooks(hooks: Iterable[Hook]) -> tuple[list, list]:
    """The hooks that swap weights in and out of the model.

    A hook swaps weights when it is mmengine's ``EMAHook`` or a subclass
    (mmpretrain's, say), or when its class name contains ``EMA``.

    Args:
        hooks (Iterable[Hook]): The runner's hooks.

    Returns:
        tuple[list, list]: The ``EMAHook`` instances, which
        :class:`SwitchToDeployHook` handles by leaving the model unfolded,
        and the other swapping hooks, which it cannot handle.
    """
    handled, unknown = [], []
    for hook in hooks:
        if isinstance(hook, EMAHook):
            handled.append(hook)
        elif 'EMA' in type(hook).__name__:
            unknown.append(hook)
    return handled, unknown


def check_deployable(hooks: Iterable[Hook]) -> None:
    """Refuse to deploy next to a weight-swapping hook that is not an
    ``EMAHook``.

    Such a hook copies unfolded weights into a model whose folded layers
    no longer read them (or reads folded ones back), so a deployed model
    would score neither the raw nor the swapped-in weights.

    Args:
        hooks (Iterable[Hook]): The runner's hooks.

    Raises:
        DeployError: Naming the hooks and the fix.
    """
    _, unknown = weight_swapping_hooks(hooks)
    if unknown:
        names = ', '.join(type(h).__name__ for h in unknown)
        raise DeployError(
            f'--deploy: {names} swaps weights in and out of the model and is '
            "not mmengine's EMAHook (nor a subclass of it), the one kind of "
            'weight-swapping hook that deploying knows to leave unfolded; '
            'a deployed model would score neither weight set. Test without '
            '--deploy (the same numbers, about 2 % slower), or derive the '
            'hook from mmengine.hooks.EMAHook.')


class SwitchToDeployHook(Hook):
    """Fold FcaFormer's Conv-BN layers and layer scales once, before testing.

    It runs after the checkpoint is loaded (``before_test``), so the folded
    weights are those of the checkpoint. It does nothing, saying why, when
    mmengine's ``EMAHook`` (or a subclass) is registered: that hook copies
    unfolded weights into the model, so the model must stay unfolded. Any
    other hook that swaps weights (a class name with ``EMA``) stops the
    test (:func:`check_deployable`).
    """

    priority = 'LOWEST'

    def before_test(self, runner) -> None:
        check_deployable(runner.hooks)
        handled, _ = weight_swapping_hooks(runner.hooks)
        if handled:
            print_log(
                'FcaFormer stays undeployed for testing: '
                f'{", ".join(type(h).__name__ for h in handled)} swaps '
                'weights in and out of the model.',
                logger='current',
                level=logging.WARNING)
            return
        switched = switch_to_deploy(runner.model)
        if switched:
            print_log(
                f'Switched {switched} FcaFormer backbone(s) to deploy mode '
                '(Conv-BN and layer scales folded) for testing.',
                logger='current')
