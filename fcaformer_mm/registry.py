"""Registries of fcaformer_mm.

Each registry is a child of the matching mmengine root registry and carries
the scope ``fcaformer_mm``, so ``type='fcaformer_mm.FcaFormer'`` resolves from
any scope (mmseg, mmdet, mmpretrain, mmengine). To make the bare name
``type='FcaFormer'`` work inside the host codebases as well, the package also
registers its modules into the hosts that are installed; see
:mod:`fcaformer_mm.hosts`.
"""
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import (
    OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS,
)
from mmengine.registry import Registry

#: Backbones and other ``nn.Module`` parts.
MODELS = Registry(
    'model',
    parent=MMENGINE_MODELS,
    scope='fcaformer_mm',
    locations=['fcaformer_mm.models'])

#: Optimizer-wrapper constructors (layer-wise learning-rate decay).
OPTIM_WRAPPER_CONSTRUCTORS = Registry(
    'optimizer wrapper constructor',
    parent=MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS,
    scope='fcaformer_mm',
    locations=['fcaformer_mm.engine.optimizers'])
