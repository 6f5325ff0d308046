"""What FcaFormer is built from, besides its architecture.

- :mod:`.layers`: ``DropPath``, ``LayerNorm2d``, ``ConvBN`` and other
  building blocks that are not specific to FcaFormer;
- :mod:`.windows`: window partition and position-bias helpers;
- :mod:`.arguments`: checks of the backbone's arguments and inputs;
- :mod:`.checkpoint`: finding and loading weights in checkpoints, shared by
  the backbone and the converter;
- :mod:`.layer_decay`: the layer-wise learning-rate decay rules, shared by
  the backbone and the optimizer-wrapper constructor.
"""
