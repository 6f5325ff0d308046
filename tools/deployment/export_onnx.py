#!/usr/bin/env python3
"""Export FcaFormer, or a whole model of a config, to ONNX with dynamic
batch, height and width, and check it against PyTorch with onnxruntime
(``--verify``); see :mod:`fcaformer_mm.utils.onnx_export`.

Examples:
    python tools/deployment/export_onnx.py \\
        configs/upernet_fcaformer_l2_ade20k.py --out upernet.onnx --verify
    python tools/deployment/export_onnx.py --arch l2 --out fcaformer.onnx \\
        --checkpoint fcaformer_l2.pth --verify --deploy
"""
import sys

from fcaformer_mm.utils.onnx_export import main

if __name__ == '__main__':
    sys.exit(main())
