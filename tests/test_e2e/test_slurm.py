"""``tools/slurm_train.sh`` on a real one-node Slurm cluster: two ``srun``
tasks train the UperNet config over gloo (``--launcher slurm --cpu``).

``.ci/run`` starts the cluster (``.ci/slurm_up.sh``: Debian's slurm-wlm and
munge); where no cluster is up, the test says so and skips.
"""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from .conftest import (
    SEG_CONFIG,
    TOOLS,
    free_port,
    options,
    run,
    seg_options,
    tool_env,
)


def _slurm_up() -> bool:
    if shutil.which('srun') is None or shutil.which('sinfo') is None:
        return False
    proc = subprocess.run(['sinfo', '-h', '-p', 'cpu', '-o', '%a'],
                          capture_output=True, text=True)
    return proc.returncode == 0 and 'up' in proc.stdout


@pytest.mark.skipif(not _slurm_up(),
                    reason='no Slurm cluster with a "cpu" partition here '
                    '(.ci/slurm_up.sh starts one)')
def test_slurm_train_two_tasks(ade_root, tmp_path):
    work_dir = tmp_path / 'slurm'
    env = tool_env()
    env.update(GPUS='2', GPUS_PER_NODE='2', CPUS_PER_TASK='1', GRES='',
               PYTHON=sys.executable, MASTER_PORT=str(free_port()))
    opts = seg_options(ade_root, max_iters=2)
    opts['env_cfg.dist_cfg.timeout'] = 1800
    proc = run(['bash', TOOLS / 'slurm_train.sh', 'cpu', 'fcaformer-test',
                SEG_CONFIG, '--cpu', '--work-dir', work_dir] +
               options(**opts), cwd=tmp_path, env=env)
    log = proc.stdout
    assert '--ntasks=2' in log and '--launcher=slurm' in log
    assert '--gres' not in log
    assert 'Distributed launcher: slurm' in log
    assert 'GPU number: 2' in log  # mmengine's name for the world size
    assert "dist_cfg: {'backend': 'gloo'" in log
    assert (work_dir / 'iter_2.pth').is_file()
