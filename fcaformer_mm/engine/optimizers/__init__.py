"""Optimizer-wrapper constructors of fcaformer_mm."""
from .layer_decay_optim_wrapper_constructor import (
    FcaFormerLayerDecayOptimWrapperConstructor,
)

__all__ = ['FcaFormerLayerDecayOptimWrapperConstructor']
