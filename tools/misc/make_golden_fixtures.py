#!/usr/bin/env python3
"""Remake ``tests/data/fcaformer_golden.pth`` by running the official code
(``hkzhang-git/FcaFormer``) from a local checkout on seeded weights and
inputs; the cases are in :mod:`fcaformer_mm.analysis.golden`.

Example:
    git clone https://github.com/hkzhang-git/FcaFormer /tmp/FcaFormer
    pip install einops
    python tools/misc/make_golden_fixtures.py /tmp/FcaFormer \\
        --out /tmp/fcaformer_golden.pth
"""
import sys

from fcaformer_mm.analysis.golden import main

if __name__ == '__main__':
    sys.exit(main())
