"""Registration of fcaformer_mm's modules into the installed host codebases.

Every module of the package lives in a registry of scope ``fcaformer_mm``
(:mod:`fcaformer_mm.registry`), so ``type='fcaformer_mm.FcaFormer'`` resolves
from any scope. Host codebases look bare names up in their own registries
only, so for ``type='FcaFormer'`` to build inside an mmseg, mmdet or
mmpretrain config, each module is also registered, under the same name, in
the matching registry of every host that is installed. A host that is not
installed is skipped; a host that fails to import is reported with a warning
and skipped, so ``import fcaformer_mm`` never depends on any of them.
"""
from __future__ import annotations

import importlib
import importlib.util
import warnings

from . import registry as own_registry

#: Host scope -> the module that holds its registries.
HOSTS: dict[str, str] = {
    'mmpretrain': 'mmpretrain.registry',
    'mmseg': 'mmseg.registry',
    'mmdet': 'mmdet.registry',
}

#: Registries of fcaformer_mm mirrored into the hosts (same attribute name).
MIRRORED_REGISTRIES: tuple[str, ...] = ('MODELS', 'OPTIM_WRAPPER_CONSTRUCTORS')


def is_installed(package: str) -> bool:
    """Whether ``package`` can be found, without importing it."""
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # hidden or half-imported package
        return False


def _mirror(host_scope: str, host_module: object) -> list[str]:
    """Register each of our modules into the host's registry of that kind.

    Returns:
        list[str]: Names that could not be registered because the host
        already has a different module under that name.
    """
    clashes = []
    for attr in MIRRORED_REGISTRIES:
        ours = getattr(own_registry, attr)
        theirs = getattr(host_module, attr)
        for name, module in ours.module_dict.items():
            existing = theirs.module_dict.get(name)
            if existing is module:
                continue
            if existing is not None:
                # Never shadow a host's own module: the bare name keeps the
                # host's meaning, ours stays reachable as fcaformer_mm.<name>.
                clashes.append(f'{attr}.{name}')
                continue
            theirs.register_module(name=name, module=module)
    return clashes


def register_in_hosts() -> dict[str, str]:
    """Register the package's modules into every installed host codebase.

    Idempotent: modules already registered are left as they are.

    Returns:
        dict[str, str]: For each host scope, one of ``'registered'``,
        ``'not installed'`` or a sentence saying why it was skipped.
    """
    status = {}
    for scope, module_name in HOSTS.items():
        if not is_installed(scope):
            status[scope] = 'not installed'
            continue
        try:
            host_module = importlib.import_module(module_name)
        except Exception as exc:  # a broken host must not break the import
            status[scope] = f'import failed: {type(exc).__name__}: {exc}'
            warnings.warn(
                f'fcaformer_mm: {scope} is installed but `import '
                f'{module_name}` failed ({type(exc).__name__}: {exc}); '
                f'FcaFormer is not registered in the {scope} scope. Use '
                f"type='fcaformer_mm.FcaFormer' there, or repair the "
                f'{scope} install (see README, "Supported versions").',
                stacklevel=2)
            continue
        clashes = _mirror(scope, host_module)
        if clashes:
            status[scope] = ('registered, except names the host already '
                             f'uses: {", ".join(clashes)}')
            warnings.warn(
                f'fcaformer_mm: {scope} already registers '
                f'{", ".join(clashes)}; the bare name keeps its {scope} '
                'meaning. Prefix it with "fcaformer_mm." to use ours.',
                stacklevel=2)
        else:
            status[scope] = 'registered'
    return status


def scopes_holding(name: str, registry_attr: str = 'MODELS') -> list[str]:
    """List the scopes whose registry of a kind resolves a bare name.

    Args:
        name (str): Module name, e.g. ``'FcaFormer'``.
        registry_attr (str): Registry attribute name in the ``registry``
            modules. Defaults to ``'MODELS'``.

    Returns:
        list[str]: Scopes (``'fcaformer_mm'`` and installed hosts) in which
        ``name`` is registered.
    """
    found = []
    if name in getattr(own_registry, registry_attr).module_dict:
        found.append('fcaformer_mm')
    for scope, module_name in HOSTS.items():
        if not is_installed(scope):
            continue
        try:
            host_module = importlib.import_module(module_name)
        except Exception:
            continue
        if name in getattr(host_module, registry_attr).module_dict:
            found.append(scope)
    return found
