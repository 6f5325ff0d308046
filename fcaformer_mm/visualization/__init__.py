"""Visualizers registered in the host codebases that are installed.

``ContiguousSegLocalVisualizer`` (mmseg's ``VISUALIZERS``) works around an
mmseg 1.2.2 bug that breaks its own ``browse_dataset.py`` with any OpenCV
(see :mod:`.seg_local_visualizer`). A host that is missing is skipped; one
that fails to import is reported with a warning.
"""
import warnings

from ..hosts import is_installed

__all__: list[str] = []

if is_installed('mmseg'):
    try:
        from .seg_local_visualizer import ContiguousSegLocalVisualizer  # noqa: F401
        __all__.append('ContiguousSegLocalVisualizer')
    except Exception as exc:  # a broken host must not break the import
        warnings.warn(
            f'fcaformer_mm: mmseg is installed but its visualizer could not '
            f'be extended ({type(exc).__name__}: {exc}); the mmseg configs '
            "need type='ContiguousSegLocalVisualizer' only for mmseg's "
            'browse_dataset.py.', stacklevel=2)
