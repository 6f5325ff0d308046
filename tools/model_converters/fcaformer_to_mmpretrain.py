#!/usr/bin/env python3
"""Convert an official FcaFormer classification checkpoint for mmpretrain.

Writes ``{'state_dict': {'backbone.<official name>': ..., 'head.fc.*': ...},
'meta': {...}}`` from the official ``model`` (or, with ``--ema``,
``model_ema``) weights, after checking that they fit the classifier they
describe; see :mod:`fcaformer_mm.utils.converter`.

Example::

    python tools/model_converters/fcaformer_to_mmpretrain.py \\
        fcaformer_l2.pth fcaformer-l2_in1k.pth --ema
"""
import sys

from fcaformer_mm.utils.converter import main

if __name__ == '__main__':
    sys.exit(main())
