#!/usr/bin/env python3
"""Count the parameters and multiply-accumulates (MACs) of a config's model.

Two counts: ``nn`` modules only, by the rules of mmcv 1.x's
``get_model_complexity_info`` (the counter behind the published FcaFormer
figures), and the full count of ``mmengine.analysis.FlopAnalyzer``; see
:mod:`fcaformer_mm.analysis.flops`. Default input sizes: 512x2048 (mmseg),
1280x800 (mmdet), 224x224 (mmpretrain).

Example:
    python tools/analysis_tools/get_flops.py \\
        configs/upernet_fcaformer_l2_ade20k.py --json flops.json
"""
import sys

from fcaformer_mm.analysis.flops import main

if __name__ == '__main__':
    sys.exit(main())
