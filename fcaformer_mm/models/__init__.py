"""Models of fcaformer_mm."""
from .backbones import *  # noqa: F401,F403
