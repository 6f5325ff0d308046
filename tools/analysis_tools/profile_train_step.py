#!/usr/bin/env python3
"""Where time and memory go in one training step of a dense backbone
(``saved``: activations kept for the backward pass; ``ops``: operator
profile); see :mod:`fcaformer_mm.analysis.profile`.

Examples:
    python tools/analysis_tools/profile_train_step.py saved fcaformer \\
        convnext-t --with-cp both
    python tools/analysis_tools/profile_train_step.py ops fcaformer
"""
import sys

from fcaformer_mm.analysis.profile import main_train_step

if __name__ == '__main__':
    sys.exit(main_train_step())
