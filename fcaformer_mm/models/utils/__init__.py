"""What FcaFormer is built from, besides its architecture.

- :mod:`.layers`: ``DropPath``, ``LayerNorm2d``, ``ConvBN`` and other
  building blocks that are not specific to FcaFormer;
- :mod:`.windows`: window partition and index helpers (shapes only);
- :mod:`.execution`: which code path runs (the reference computation or
  the eager inference paths), per thread and context;
- :mod:`.cpu_kernels`: the eager CPU inference kernels and their FLOP
  formulas;
- :mod:`.arguments`: checks of the backbone's arguments and inputs;
- :mod:`.checkpoint`: finding and loading weights in checkpoints, shared by
  the backbone and the converter;
- :mod:`.layer_decay`: the layer-wise learning-rate decay rules, shared by
  the backbone and the optimizer-wrapper constructor.
"""
from .execution import (
    ExecutionOptions,
    current_options,
    execution_options,
    reference_path,
)

__all__ = [
    'ExecutionOptions', 'current_options', 'execution_options',
    'reference_path'
]
