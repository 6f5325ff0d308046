"""The advice the tools print is followed as a user would: every
``--cfg-options`` line of ``make_synthetic_data.py`` trains the config it
names (tools/train.py, on the CPU), with only the small sizes of these tests
added and nothing of the printed line changed."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from .conftest import (
    REPO,
    TOOLS,
    cls_options,
    det_options,
    run,
    seg_options,
)

GENERATOR = TOOLS / 'dataset_converters' / 'make_synthetic_data.py'
TRAIN = TOOLS / 'train.py'

#: Per dataset: the generator's small settings, and the test sizes of the
#: config (data roots left to the printed line).
CASES = {
    'ade20k': (['--num-train', 2, '--num-val', 1, '--size', 64, 64],
               lambda root: {**seg_options(root, max_iters=1),
                             'default_hooks.checkpoint.interval': 1}),
    'coco': (['--num-train', 1, '--num-val', 1],
             lambda root: det_options(root, 'mask_rcnn')),
    'imagenet': (['--num-train', 1, '--num-val', 1, '--num-classes', 4],
                 cls_options),
}


def printed_advice(output: str) -> tuple[Path, list[list[str]]]:
    """The config the tool names and its ``--cfg-options`` lines (each as
    ``key=value`` arguments)."""
    config = re.search(r'e\.g\. (\S+\.py):', output)
    assert config, output
    lines = [shlex.split(line.strip())[1:] for line in output.splitlines()
             if line.strip().startswith('--cfg-options ')]
    return REPO / config[1], lines


@pytest.mark.parametrize('dataset', list(CASES))
def test_synthetic_data_advice_trains(dataset, tmp_path):
    args, sizes = CASES[dataset]
    root = tmp_path / dataset
    proc = run([GENERATOR, dataset, '--out', root, *args], cwd=tmp_path)
    config, lines = printed_advice(proc.stdout)
    # ImageNet: the 1000-class head and a head as wide as the data.
    assert len(lines) == (2 if dataset == 'imagenet' else 1), proc.stdout
    for i, printed in enumerate(lines):
        keys = {kv.split('=', 1)[0] for kv in printed}
        test_sizes = [f'{k}={v}' for k, v in sizes(root).items()
                      if k not in keys and not k.endswith('.data_root')
                      and not k.endswith('.ann_file')]
        work_dir = tmp_path / f'run{i}'
        run([TRAIN, config, '--cpu', '--work-dir', work_dir,
             '--cfg-options', *test_sizes, *printed], cwd=tmp_path)
        assert list(work_dir.glob('*.pth')), f'no checkpoint: {printed}'


def test_missing_dataset_advice_trains(tmp_path):
    """tools/train.py on a config whose data is missing prints two ways
    out, and each trains: the generator command (run as printed, from the
    folder the config's relative data root is read from), and the
    ``--cfg-options`` line with its placeholder replaced by a real copy."""
    from .conftest import SEG_CONFIG

    sizes = [f'{k}={v}' for k, v in {
        **seg_options(Path('unused'), max_iters=1),
        'default_hooks.checkpoint.interval': 1}.items()
        if not k.endswith('.data_root')]
    proc = run([TRAIN, SEG_CONFIG, '--cpu', '--work-dir', tmp_path / 'w0',
                '--cfg-options', *sizes], cwd=tmp_path, check=False)
    assert proc.returncode != 0
    lines = [ln.strip() for ln in proc.stdout.splitlines()]
    generator = next(ln for ln in lines
                     if ln.startswith('python3 ') and 'make_synthetic' in ln)
    printed = next(shlex.split(ln)[1:] for ln in lines
                   if ln.startswith('--cfg-options '))

    # 1. The generator, as printed (its script path is the repository's).
    cmd = shlex.split(generator)[1:]
    run([REPO / cmd[0], *cmd[1:], '--num-train', 2, '--num-val', 1,
         '--size', 64, 64], cwd=tmp_path)
    run([TRAIN, SEG_CONFIG, '--cpu', '--work-dir', tmp_path / 'w1',
         '--cfg-options', *sizes], cwd=tmp_path)
    assert list((tmp_path / 'w1').glob('*.pth'))

    # 2. The --cfg-options line, pointed at a copy elsewhere.
    out = cmd[cmd.index('--out') + 1]
    copy = tmp_path / 'elsewhere' / Path(out).name
    copy.parent.mkdir()
    (tmp_path / out).rename(copy)
    placeholder = printed[0].split('=', 1)[1]
    options = [kv.replace(placeholder, str(copy)) for kv in printed]
    assert all(str(copy) in kv for kv in options), printed
    run([TRAIN, SEG_CONFIG, '--cpu', '--work-dir', tmp_path / 'w2',
         '--cfg-options', *sizes, *options], cwd=tmp_path)
    assert list((tmp_path / 'w2').glob('*.pth'))
