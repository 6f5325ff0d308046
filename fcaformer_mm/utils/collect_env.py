"""Environment report: versions, mmcv ops, and where our modules resolve."""
from __future__ import annotations

import importlib
import importlib.util
import platform
import sys
from typing import Any

from .. import compat, hosts
from ..registry import MODELS, OPTIM_WRAPPER_CONSTRUCTORS

_PACKAGES = ('torch', 'torchvision', 'numpy', 'mmengine', 'mmcv',
             'mmpretrain', 'mmseg', 'mmdet')


def _version(name: str) -> str:
    if importlib.util.find_spec(name) is None:
        return 'not installed'
    try:
        return str(importlib.import_module(name).__version__)
    except Exception as exc:  # report, never raise
        return f'import failed ({type(exc).__name__}: {exc})'


def _mmcv_ops() -> str:
    if importlib.util.find_spec('mmcv') is None:
        return 'mmcv not installed'
    try:
        import torch
        from mmcv.ops import nms
        nms(torch.zeros(1, 4), torch.zeros(1), 0.5)
    except Exception as exc:
        return f'no ({type(exc).__name__}: {exc})'
    return 'yes'


def collect_env() -> dict[str, Any]:
    """Collect what the environment report shows.

    Returns:
        dict: Keys ``'platform'``, ``'versions'`` (package -> version or
        why it is missing), ``'cuda'``, ``'mmcv_ops'``, ``'compat'`` (what
        :func:`fcaformer_mm.compat.apply` did), ``'hosts'`` (host scope ->
        registration status) and ``'registries'`` (our module name -> the
        scopes that resolve it).
    """
    import torch

    import fcaformer_mm
    env: dict[str, Any] = {
        'platform': f'{platform.platform()}, Python {sys.version.split()[0]}',
        'versions': {'fcaformer_mm': fcaformer_mm.__version__},
        'cuda': (f'available: {torch.cuda.get_device_name(0)}'
                 if torch.cuda.is_available() else
                 f'not available (torch built with CUDA {torch.version.cuda})'
                 if torch.version.cuda else 'not available (CPU-only torch)'),
    }
    env['versions'].update({name: _version(name) for name in _PACKAGES})
    env['mmcv_ops'] = _mmcv_ops()
    env['compat'] = compat.apply()
    env['hosts'] = dict(fcaformer_mm.HOST_REGISTRATION)
    registries = {}
    for attr, registry in (('MODELS', MODELS), ('OPTIM_WRAPPER_CONSTRUCTORS',
                                                OPTIM_WRAPPER_CONSTRUCTORS)):
        for name in registry.module_dict:
            registries[name] = hosts.scopes_holding(name, attr)
    env['registries'] = registries
    return env


def format_env_report(env: dict[str, Any] | None = None) -> str:
    """Render :func:`collect_env` as readable text.

    Args:
        env (dict, optional): A result of :func:`collect_env`. Collected
            now when omitted.

    Returns:
        str: The report.
    """
    env = collect_env() if env is None else env
    lines = ['fcaformer_mm environment report', '=' * 31,
             f'platform: {env["platform"]}', f'CUDA: {env["cuda"]}', '',
             'versions:']
    lines += [f'  {k:<13} {v}' for k, v in env['versions'].items()]
    lines += ['', f'mmcv ops load: {env["mmcv_ops"]}',
              f'torch.load compatibility layer: '
              f'{"applied" if env["compat"]["applied"] else "no allow-list"} '
              f'({env["compat"]["reason"]})',
              'checkpoint loaders read with weights_only=True: ' + ', '.join(
                  p or 'local paths'
                  for p in env['compat'].get('loaders', [])), '',
              'host codebases:']
    lines += [f'  {k:<11} {v}' for k, v in env['hosts'].items()]
    lines += ['', 'registries holding fcaformer_mm modules:']
    lines += [f'  {k}: {", ".join(v)}' for k, v in env['registries'].items()]
    return '\n'.join(lines)
