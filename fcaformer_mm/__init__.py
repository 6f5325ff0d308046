"""fcaformer_mm: FcaFormer (ICCV 2023) on the OpenMMLab 2.0 stack.

Importing the package:

1. applies the compatibility layer (:mod:`fcaformer_mm.compat`), so that
   mmengine can resume its own checkpoints under ``torch.load``'s
   ``weights_only=True`` default of torch >= 2.6;
2. registers the package's modules in its own registries (scope
   ``fcaformer_mm``) and in those of each installed host codebase
   (mmpretrain, mmsegmentation, mmdetection), see :mod:`fcaformer_mm.hosts`;
3. registers the package's classification models in mmpretrain's model hub,
   so that ``mmpretrain.get_model`` / ``list_models`` / ``inference_model``
   take their names (see :mod:`fcaformer_mm.apis`).

None of the host codebases is required. Without torch or mmengine nothing
is registered and only :mod:`fcaformer_mm.datasets` (numpy and Pillow) can
be used: the synthetic datasets and their tool
``tools/dataset_converters/make_synthetic_data.py`` need no more.
"""
from importlib.util import find_spec

from .version import __version__, version_info

#: Whether torch and mmengine are installed: the models, the engine and
#: the registration need both.
WITH_STACK = all(
    find_spec(name) is not None for name in ('torch', 'mmengine'))

HOST_REGISTRATION: dict = {}
MODEL_HUB_REGISTRATION = 'not registered: torch or mmengine is missing'

if WITH_STACK:
    from . import compat

    compat.apply()

    from . import engine, models, visualization  # noqa: F401
    from .hosts import register_in_hosts

    HOST_REGISTRATION = register_in_hosts()

    from .apis import register_model_hub

    MODEL_HUB_REGISTRATION = register_model_hub(HOST_REGISTRATION)

__all__ = [
    '__version__', 'version_info', 'WITH_STACK', 'HOST_REGISTRATION',
    'MODEL_HUB_REGISTRATION'
]
