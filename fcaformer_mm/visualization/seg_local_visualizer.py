"""mmseg's segmentation visualizer, drawing on C-contiguous images.

mmseg 1.2.2's ``tools/analysis_tools/browse_dataset.py`` hands the visualizer
a strided view of each image (the CHW tensor permuted to HWC, channels
re-ordered). ``SegLocalVisualizer._draw_sem_seg`` makes its mask with
``np.zeros_like(image)``, which keeps those strides, and draws the class
labels on it with ``cv2.rectangle``, which refuses non-contiguous output
arrays ("Layout of the output array img is incompatible with cv::Mat") in
every OpenCV release tried (4.5.5 to 5.0). The package's mmseg configs use
this subclass, which gives the parent a contiguous copy and is otherwise the
same.
"""
from __future__ import annotations

import numpy as np
from mmseg.registry import VISUALIZERS
from mmseg.visualization import SegLocalVisualizer

__all__ = ['ContiguousSegLocalVisualizer']


@VISUALIZERS.register_module()
class ContiguousSegLocalVisualizer(SegLocalVisualizer):
    """``SegLocalVisualizer`` that draws on a C-contiguous copy of the image
    (see the module docstring); same arguments."""

    def _draw_sem_seg(self, image: np.ndarray, *args, **kwargs) -> np.ndarray:
        return super()._draw_sem_seg(np.ascontiguousarray(image), *args,
                                     **kwargs)
