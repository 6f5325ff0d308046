"""Dataset helpers: synthetic copies of ADE20K, COCO and ImageNet on their
real layouts (:mod:`.synthetic`), and a check of a config's dataset paths
that says what is missing and how to fix it (:mod:`.checks`).

Only numpy and Pillow are needed; no host codebase is imported.
"""
from .checks import check_dataset_layout
from .synthetic import make_ade20k, make_coco, make_imagenet

__all__ = [
    'check_dataset_layout', 'make_ade20k', 'make_coco', 'make_imagenet'
]
