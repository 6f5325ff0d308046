#!/usr/bin/env python3
"""Top operators, Python overhead and largest tensors of edge-table
classifiers at batch 1; see :mod:`fcaformer_mm.analysis.profile`.

Example:
    python tools/analysis_tools/profile_inference.py fcaformer-l1 \\
        fcaformer-l2 convnext-t --threads 2 --json profile.json
"""
import sys

from fcaformer_mm.analysis.profile import main_inference

if __name__ == '__main__':
    sys.exit(main_inference())
