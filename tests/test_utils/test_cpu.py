"""to_cpu_config on the repository's configs and on small configs."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from mmengine.config import Config

from fcaformer_mm.utils.cpu import (
    AMP_ONLY_KEYS,
    SYNC_BN_TYPES,
    init_cpu_dist,
    slurm_dist_env,
    to_cpu_config,
)

CONFIGS = sorted(
    (Path(__file__).resolve().parents[2] / 'configs').glob('*.py'))


def _types(node, found=None) -> list:
    """Every ``type`` value in a nested config."""
    found = [] if found is None else found
    if isinstance(node, dict):
        if 'type' in node:
            found.append(node['type'])
        for value in node.values():
            _types(value, found)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _types(value, found)
    return found


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.stem)
def test_repo_configs(path):
    cfg = Config.fromfile(str(path))
    before = cfg.pretty_text
    cpu = to_cpu_config(cfg)

    assert cfg.pretty_text == before, 'the input config was modified'
    assert cpu.optim_wrapper.type == 'OptimWrapper'
    assert not set(AMP_ONLY_KEYS) & set(cpu.optim_wrapper)
    # The optimizer and the layer-decay settings are kept.
    assert cpu.optim_wrapper.optimizer == cfg.optim_wrapper.optimizer
    assert cpu.optim_wrapper.get('paramwise_cfg') == cfg.optim_wrapper.get(
        'paramwise_cfg')
    assert cpu.optim_wrapper.get('constructor') == cfg.optim_wrapper.get(
        'constructor')
    assert cpu.optim_wrapper.get('clip_grad') == cfg.optim_wrapper.get(
        'clip_grad')
    assert not set(SYNC_BN_TYPES) & set(map(str, _types(cpu._cfg_dict)))
    assert cpu.env_cfg.dist_cfg.backend == 'gloo'
    assert cpu.model_wrapper_cfg.device_ids is None
    # Nothing else changes.
    assert cpu.model.backbone == cfg.model.backbone
    assert cpu.train_dataloader == cfg.train_dataloader


def test_repo_configs_swap_what_they_have():
    by_name = {p.stem: Config.fromfile(str(p)) for p in CONFIGS}
    seg = by_name['upernet_fcaformer_l2_ade20k']
    assert seg.optim_wrapper.type == 'AmpOptimWrapper'
    assert seg.model.decode_head.norm_cfg.type == 'SyncBN'
    cpu = to_cpu_config(seg)
    assert cpu.model.decode_head.norm_cfg == dict(
        type='BN', requires_grad=True)
    assert cpu.model.auxiliary_head.norm_cfg.type == 'BN'
    assert cpu.norm_cfg.type == 'BN'

    cascade = to_cpu_config(
        by_name['cascade_mask_rcnn_fcaformer_l2_fpn_3x_coco'])
    assert [h.norm_cfg.type for h in cascade.model.roi_head.bbox_head
            ] == ['BN'] * 3


def test_plain_dict_and_details():
    cfg = dict(
        model=dict(
            heads=[
                dict(norm_cfg=dict(type='mmseg.SyncBN', momentum=0.01)),
                dict(norm_cfg=dict(type='MMSyncBN', group=None)),
                dict(norm_cfg=dict(type='GN', num_groups=4)),
            ]),
        optim_wrapper=dict(
            type='AmpOptimWrapper',
            loss_scale=dict(init_scale=512.),
            dtype='float16',
            accumulative_counts=2,
            clip_grad=dict(max_norm=1.0),
            optimizer=dict(type='SGD', lr=0.1)),
        model_wrapper_cfg=dict(
            type='MMDistributedDataParallel', find_unused_parameters=True))
    cpu = to_cpu_config(cfg)
    assert isinstance(cpu, dict)
    assert cfg['optim_wrapper']['type'] == 'AmpOptimWrapper'
    assert cpu['optim_wrapper'] == dict(
        type='OptimWrapper',
        accumulative_counts=2,
        clip_grad=dict(max_norm=1.0),
        optimizer=dict(type='SGD', lr=0.1))
    heads = cpu['model']['heads']
    assert heads[0]['norm_cfg'] == dict(type='BN', momentum=0.01)
    assert heads[1]['norm_cfg'] == dict(type='BN')
    assert heads[2]['norm_cfg'] == dict(type='GN', num_groups=4)
    assert cpu['model_wrapper_cfg'] == dict(
        type='MMDistributedDataParallel',
        find_unused_parameters=True,
        device_ids=None)
    assert cpu['env_cfg'] == dict(dist_cfg=dict(backend='gloo'))


def test_init_cpu_dist_rejects_other_launchers():
    init_cpu_dist('none')  # nothing to do
    with pytest.raises(ValueError, match='not .mpi.'):
        init_cpu_dist('mpi')
    with pytest.raises(ValueError, match='gloo'):
        init_cpu_dist('pytorch', backend='nccl')


def test_slurm_dist_env():
    task = dict(SLURM_PROCID='3', SLURM_NTASKS='4', SLURM_LOCALID='1',
                SLURM_NODELIST='node07')
    assert slurm_dist_env(task) == dict(
        RANK='3', WORLD_SIZE='4', LOCAL_RANK='1', MASTER_ADDR='node07',
        MASTER_PORT='29500')
    kept = slurm_dist_env({**task, 'MASTER_ADDR': 'head', 'MASTER_PORT': '7'})
    assert (kept['MASTER_ADDR'], kept['MASTER_PORT']) == ('head', '7')
    with pytest.raises(KeyError, match='through srun'):
        slurm_dist_env({'SLURM_NTASKS': '1'})


def test_init_cpu_dist_under_slurm_starts_a_gloo_group(tmp_path):
    """A one-task Slurm environment: the group starts from SLURM_*."""
    script = tmp_path / 'task.py'
    script.write_text(
        'import torch.distributed as dist\n'
        'from fcaformer_mm.utils.cpu import init_cpu_dist\n'
        'init_cpu_dist("slurm", backend="gloo", timeout=600)\n'
        'print(dist.get_backend(), dist.get_rank(), dist.get_world_size())\n'
        'dist.destroy_process_group()\n')
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(('SLURM_', 'MASTER_', 'RANK', 'WORLD_SIZE'))
    }
    env.update(SLURM_PROCID='0', SLURM_NTASKS='1', SLURM_LOCALID='0',
               SLURM_NODELIST='127.0.0.1', MASTER_PORT=str(_free_port()))
    proc = subprocess.run([sys.executable, str(script)], env=env,
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ['gloo', '0', '1']


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]
