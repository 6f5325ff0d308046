#!/usr/bin/env python3
"""Speed and memory of FcaFormer against ConvNeXt-T and Swin-T (dense
backbones, whole models of ``--configs``), or the paper's edge-device table
of classifiers (``--table edge``).

The metrics, models and report are described in
:mod:`fcaformer_mm.analysis.benchmark`; ``--help`` lists the options.

Examples:
    python tools/analysis_tools/benchmark.py --device cpu --threads 2 \\
        --size 512 512 --repeats 7 --json bench.json --plot bench.png
    python tools/analysis_tools/benchmark.py --table edge --threads 4 \\
        --repeats 15 --json edge.json --plot edge.png
    python tools/analysis_tools/benchmark.py --device cpu --threads 2 \\
        --models fcaformer convnext-t --metrics train memory --size 512 512
"""
import sys

from fcaformer_mm.analysis.benchmark import main

if __name__ == '__main__':
    sys.exit(main())
