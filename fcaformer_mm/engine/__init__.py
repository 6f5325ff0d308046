"""Training-engine parts of fcaformer_mm."""
from .optimizers import *  # noqa: F401,F403
