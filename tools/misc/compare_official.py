#!/usr/bin/env python3
"""Compare this package's FcaFormer with the official code, side by side.

Same seeded weights and inputs in both; ours eager and deployed; dense
models of every ``--archs`` at every ``--sizes`` and the classifiers at
224x224 (see :mod:`fcaformer_mm.analysis.compare`). Exits with 1 if a
difference exceeds ``--tolerance``.

Example:
    python tools/misc/compare_official.py /path/to/FcaFormer --threads 2
    python tools/misc/compare_official.py /path/to/FcaFormer --archs l2 \\
        --sizes 512x512 --json compare.json
"""
import sys

from fcaformer_mm.analysis.compare import main

if __name__ == '__main__':
    sys.exit(main())
