"""Dataset helpers: synthetic copies of ADE20K, COCO and ImageNet on their
real layouts (:mod:`.synthetic`).

Only numpy and Pillow are needed; no host codebase is imported.
"""
from .synthetic import make_ade20k, make_coco, make_imagenet

__all__ = ['make_ade20k', 'make_coco', 'make_imagenet']
