"""Training-engine parts of fcaformer_mm."""
from .hooks import *  # noqa: F401,F403
from .optimizers import *  # noqa: F401,F403
