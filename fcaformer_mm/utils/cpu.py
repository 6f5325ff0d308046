"""Run OpenMMLab configs written for GPUs on the CPU.

The repository's configs are the official GPU recipes: ``AmpOptimWrapper``
(which refuses to run without a GPU), ``SyncBN`` in the heads (which torch
runs only on accelerators) and the ``nccl`` backend. :func:`to_cpu_config`
returns a copy of a config with those three swapped for their CPU
counterparts, and :func:`init_cpu_dist` starts a ``gloo`` process group
for runs launched by ``torchrun`` (mmengine's own initialisation calls
``torch.cuda.set_device`` first, which fails without a GPU).

The tools take it as ``--cpu``::

    python tools/train.py configs/upernet_fcaformer_l2_ade20k.py --cpu
    bash tools/dist_train.sh configs/upernet_fcaformer_l2_ade20k.py 2 --cpu
"""
from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from typing import Any

from mmengine.config import Config, ConfigDict

__all__ = [
    'SYNC_BN_TYPES', 'AMP_ONLY_KEYS', 'to_cpu_config', 'init_cpu_dist',
    'hide_gpus', 'check_cpu_device'
]

#: Norm layer types that synchronise over processes; all become ``BN``.
SYNC_BN_TYPES = ('SyncBN', 'MMSyncBN', 'NaiveSyncBN', 'naiveSyncBN')
#: Keys of a SyncBN config that ``BN`` does not take.
_SYNC_BN_ONLY_KEYS = ('group', 'process_group', 'stats_mode')
#: Arguments of ``AmpOptimWrapper`` that ``OptimWrapper`` does not take.
AMP_ONLY_KEYS = ('loss_scale', 'dtype', 'use_fsdp')


def _base_type(type_: Any) -> Any:
    """``'mmseg.SyncBN'`` -> ``'SyncBN'``; non-strings are returned as is."""
    return type_.rsplit('.', 1)[-1] if isinstance(type_, str) else type_


def _sync_bn_to_bn(node: Any) -> int:
    """Turn every SyncBN config under ``node`` into BN, in place.

    Returns:
        int: The number of configs changed.
    """
    changed = 0
    if isinstance(node, dict):
        if _base_type(node.get('type')) in SYNC_BN_TYPES:
            node['type'] = 'BN'
            for key in _SYNC_BN_ONLY_KEYS:
                node.pop(key, None)
            changed += 1
        for value in node.values():
            changed += _sync_bn_to_bn(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            changed += _sync_bn_to_bn(value)
    return changed


def _amp_to_plain(node: Any) -> int:
    """Turn every ``AmpOptimWrapper`` config under ``node`` into
    ``OptimWrapper``, in place, keeping the optimizer, constructor,
    ``paramwise_cfg``, ``clip_grad``, ``accumulative_counts``.

    Returns:
        int: The number of configs changed.
    """
    changed = 0
    if isinstance(node, dict):
        if _base_type(node.get('type')) == 'AmpOptimWrapper':
            node['type'] = 'OptimWrapper'
            for key in AMP_ONLY_KEYS:
                node.pop(key, None)
            changed += 1
        for key, value in node.items():
            # The optimizer itself holds no wrapper configs.
            if key != 'optimizer':
                changed += _amp_to_plain(value)
    return changed


def to_cpu_config(cfg: Config | dict) -> Config | dict:
    """A copy of ``cfg`` that trains and tests on the CPU.

    The changes:

    * ``AmpOptimWrapper`` becomes ``OptimWrapper``: the optimizer,
      constructor, ``paramwise_cfg`` (layer decay), ``clip_grad`` and
      ``accumulative_counts`` stay; the AMP-only arguments
      (:data:`AMP_ONLY_KEYS`) go.
    * Every norm config of a type in :data:`SYNC_BN_TYPES`, anywhere in the
      config (model, ``tta_model``, top-level ``norm_cfg``), becomes ``BN``
      with its other keys (``requires_grad``, ``momentum``, ``eps``) kept.
    * ``env_cfg.dist_cfg.backend`` becomes ``'gloo'``.
    * The DDP wrapper of distributed runs gets ``device_ids=None``, as
      torch's ``DistributedDataParallel`` requires for CPU modules
      (mmengine passes ``[LOCAL_RANK]`` otherwise). Non-distributed runs
      ignore ``model_wrapper_cfg``.

    Args:
        cfg (Config | dict): The config; it is not modified.

    Returns:
        Config | dict: The CPU config, of the same type as ``cfg``.

    Example:
        >>> from mmengine.config import Config
        >>> cfg = Config(dict(
        ...     model=dict(head=dict(norm_cfg=dict(type='SyncBN'))),
        ...     optim_wrapper=dict(type='AmpOptimWrapper',
        ...                        loss_scale='dynamic',
        ...                        optimizer=dict(type='AdamW', lr=1e-4))))
        >>> cpu = to_cpu_config(cfg)
        >>> cpu.model.head.norm_cfg.type, cpu.optim_wrapper.type
        ('BN', 'OptimWrapper')
        >>> 'loss_scale' in cpu.optim_wrapper, cpu.env_cfg.dist_cfg.backend
        (False, 'gloo')
        >>> cfg.optim_wrapper.type
        'AmpOptimWrapper'
    """
    cfg = copy.deepcopy(cfg)
    if cfg.get('optim_wrapper') is not None:
        _amp_to_plain(cfg['optim_wrapper'])
    for key in list(cfg.keys()):
        if key != 'optim_wrapper':
            _sync_bn_to_bn(cfg[key])

    env_cfg = cfg.get('env_cfg')
    if env_cfg is None:
        env_cfg = cfg['env_cfg'] = ConfigDict()
    dist_cfg = env_cfg.get('dist_cfg')
    if dist_cfg is None:
        dist_cfg = env_cfg['dist_cfg'] = ConfigDict()
    dist_cfg['backend'] = 'gloo'

    wrapper = cfg.get('model_wrapper_cfg')
    if wrapper is None:
        cfg['model_wrapper_cfg'] = ConfigDict(
            type='MMDistributedDataParallel',
            device_ids=None,
            broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
    elif _base_type(wrapper.get('type', 'MMDistributedDataParallel')) in (
            'MMDistributedDataParallel', 'DistributedDataParallel'):
        wrapper['device_ids'] = None
    return cfg


def hide_gpus() -> None:
    """Make this process see no GPU (``CUDA_VISIBLE_DEVICES=''``).

    mmengine decides its device once, when ``mmengine.device`` is first
    imported, so this must run before that import to take effect.
    """
    os.environ['CUDA_VISIBLE_DEVICES'] = ''


def check_cpu_device() -> None:
    """Stop if mmengine already chose an accelerator.

    mmengine chooses its device when ``mmengine.device`` is first imported;
    the tools run as scripts hide the GPUs before that (see
    :func:`hide_gpus`).

    Raises:
        SystemExit: If mmengine's device is not ``'cpu'``.
    """
    from mmengine.device import get_device
    if get_device() != 'cpu':
        raise SystemExit(
            f'--cpu: mmengine already uses the device {get_device()!r}; '
            'set CUDA_VISIBLE_DEVICES= before starting Python.')


def init_cpu_dist(launcher: str, **dist_cfg: Any) -> None:
    """Start a ``gloo`` process group for a CPU run, if none is started.

    mmengine's ``init_dist`` calls ``torch.cuda.set_device`` before it
    creates the group, which fails on machines without a GPU. The
    ``pytorch`` launcher (``torchrun``, ``tools/dist_train.sh``) sets
    ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``; under
    ``slurm`` (``srun``, ``tools/slurm_train.sh``) they are derived from the
    ``SLURM_*`` variables as mmengine does (see :func:`slurm_dist_env`). The
    group is created from them; the Runner then finds it started and uses
    it.

    Args:
        launcher (str): ``'none'`` (nothing to do), ``'pytorch'`` or
            ``'slurm'``.
        **dist_cfg: ``env_cfg.dist_cfg`` of the config: ``backend`` must be
            ``'gloo'`` if given, other keys (``timeout``) are passed to
            ``torch.distributed.init_process_group``.

    Raises:
        ValueError: For the ``mpi`` launcher, which is not supported on the
            CPU, or a backend other than gloo.
    """
    import datetime

    import torch.distributed as dist

    if launcher == 'none' or (dist.is_available()
                              and dist.is_initialized()):
        return
    if launcher not in ('pytorch', 'slurm'):
        raise ValueError(
            f'--cpu runs support --launcher none, pytorch (torchrun, '
            f'tools/dist_train.sh) or slurm (tools/slurm_train.sh), not '
            f'{launcher!r}.')
    if launcher == 'slurm':
        os.environ.update(slurm_dist_env(os.environ))
    kwargs = dict(dist_cfg)
    backend = kwargs.pop('backend', 'gloo')
    if backend != 'gloo':
        raise ValueError(f'CPU runs need the gloo backend, got {backend!r}.')
    timeout = kwargs.pop('timeout', None)
    if isinstance(timeout, (int, float)):
        kwargs['timeout'] = datetime.timedelta(seconds=timeout)
    elif timeout is not None:
        kwargs['timeout'] = timeout
    dist.init_process_group(
        backend='gloo',
        rank=int(os.environ['RANK']),
        world_size=int(os.environ['WORLD_SIZE']),
        **kwargs)


def slurm_dist_env(environ: Mapping[str, str]) -> dict[str, str]:
    """``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
    ``MASTER_PORT`` of an ``srun`` task, as mmengine's slurm launcher sets
    them: the rank and size from ``SLURM_PROCID`` and ``SLURM_NTASKS``, the
    master on the first node of ``SLURM_NODELIST`` (expanded with
    ``scontrol show hostnames``; a single plain host name is used as it
    is), port ``MASTER_PORT`` or 29500. Values already in ``environ`` for
    ``MASTER_ADDR`` and ``MASTER_PORT`` are kept.

    Raises:
        KeyError: Outside of a Slurm task (no ``SLURM_PROCID``).
    """
    import subprocess

    for key in ('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST'):
        if key not in environ:
            raise KeyError(f'--launcher slurm needs {key}: run the tool '
                           'through srun (tools/slurm_train.sh).')
    nodes = environ['SLURM_NODELIST']
    if any(c in nodes for c in '[],'):
        nodes = subprocess.run(['scontrol', 'show', 'hostnames', nodes],
                               check=True, capture_output=True,
                               text=True).stdout
    env = {
        'RANK': environ['SLURM_PROCID'],
        'WORLD_SIZE': environ['SLURM_NTASKS'],
        'LOCAL_RANK': environ.get('SLURM_LOCALID', '0'),
        'MASTER_ADDR': environ.get('MASTER_ADDR') or nodes.split()[0],
        'MASTER_PORT': environ.get('MASTER_PORT') or '29500',
    }
    return env
