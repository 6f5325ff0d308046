"""Backbones of fcaformer_mm."""
from .fcaformer import FcaFormer

__all__ = ['FcaFormer']
