"""Find the package's models by name.

The model index (``model-index.yml`` and the ``configs/*/metafile.yml`` it
imports, in the OpenMMLab format) names every config of the package. These
helpers resolve a name to its config, build the matching inferencer of the
host codebase, and register the classification models in mmpretrain's
model hub (done by ``import fcaformer_mm``).
"""
from .model_index import (
    get_config,
    get_config_path,
    get_inferencer,
    get_model_info,
    list_models,
    load_model_index,
    register_mmpretrain_models,
    register_model_hub,
    resource_root,
)

__all__ = [
    'get_config', 'get_config_path', 'get_inferencer', 'get_model_info',
    'list_models', 'load_model_index', 'register_mmpretrain_models',
    'register_model_hub', 'resource_root'
]
