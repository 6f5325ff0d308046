"""The tools as subprocesses, against checkpoints that must not be used: a
payload that would run code when unpickled (served from 127.0.0.1 or on
disk), checkpoints of other models or with weights missing, and work dirs
that hold an earlier run's checkpoints."""
from __future__ import annotations

import shutil
from pathlib import Path

import torch

from fcaformer_mm.compat import load_checkpoint_file
from fcaformer_mm.models.backbones.fcaformer import FcaFormer

from .conftest import (
    SEG_CONFIG,
    TINY_ARCH,
    TINY_WIDTHS,
    TOOLS,
    options,
    run,
    seg_options,
)

TRAIN = TOOLS / 'train.py'
TEST = TOOLS / 'test.py'


def _assert_one_clear_error(proc, *expected: str) -> None:
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert 'Traceback' not in proc.stdout, proc.stdout[-3000:]
    for text in expected:
        assert text in proc.stdout, (text, proc.stdout[-3000:])


def test_test_tool_refuses_payload_url(ade_root, payload, tmp_path):
    url, _, marker = payload
    proc = run([TEST, SEG_CONFIG, url, '--cpu', '--work-dir',
                tmp_path / 'test'] + options(**seg_options(ade_root)),
               cwd=tmp_path, check=False)
    _assert_one_clear_error(proc, 'UnsafeCheckpointError', url,
                            '`posix.system`', 'Ways out')
    assert 'mIoU:' not in proc.stdout
    assert not marker.exists()


def test_train_resume_refuses_payload_last_checkpoint(ade_root, payload,
                                                      tmp_path):
    _, path, marker = payload
    work_dir = tmp_path / 'run'
    work_dir.mkdir()
    shutil.copy(path, work_dir / 'iter_2.pth')
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'iter_2.pth'))
    proc = run([TRAIN, SEG_CONFIG, '--cpu', '--work-dir', work_dir,
                '--resume'] + options(**seg_options(ade_root)),
               cwd=tmp_path, check=False)
    _assert_one_clear_error(proc, 'UnsafeCheckpointError',
                            str(work_dir / 'iter_2.pth'), '`posix.system`')
    assert not marker.exists()


def _dense_backbone_state() -> dict:
    """The FcaFormer backbone of the tests' UperNet (the tiny one of
    :func:`seg_options`, random weights), as the ``backbone.*`` part of a
    checkpoint."""
    torch.manual_seed(0)
    backbone = FcaFormer(TINY_ARCH, out_channels=TINY_WIDTHS,
                         layer_scale_init_value=1.0)
    return {f'backbone.{k}': v for k, v in backbone.state_dict().items()}


def test_test_tool_refuses_checkpoint_of_another_model(ade_root, tmp_path):
    """An FcaFormer-L1 classifier is not an UperNet FcaFormer-L2: no score
    of weights that did not load."""
    classifier = FcaFormer('l1', out_type='avg_featmap').state_dict()
    state = {f'backbone.{k}': v for k, v in classifier.items()}
    state['head.fc.weight'] = torch.zeros(1000, 320)
    ckpt = tmp_path / 'l1_classifier.pth'
    torch.save({'state_dict': state, 'meta': {}}, ckpt)
    proc = run([TEST, SEG_CONFIG, ckpt, '--cpu', '--work-dir',
                tmp_path / 'test'] + options(**seg_options(ade_root)),
               cwd=tmp_path, check=False)
    _assert_one_clear_error(
        proc, 'CheckpointFitError', f'{ckpt} does not fit EncoderDecoder',
        'weights of other shapes', 'missing keys', 'decode_head.conv_seg',
        'unexpected keys', 'head.fc.weight')
    assert 'mIoU:' not in proc.stdout


def test_test_tool_partial_checkpoint(ade_root, tmp_path):
    """Backbone weights without the heads: refused, unless
    ``--allow-partial`` says the partial load is meant."""
    ckpt = tmp_path / 'backbone_only.pth'
    torch.save({'state_dict': _dense_backbone_state()}, ckpt)
    args = [TEST, SEG_CONFIG, ckpt, '--cpu', '--work-dir',
            tmp_path / 'test'] + options(**seg_options(ade_root))
    proc = run(args, cwd=tmp_path, check=False)
    _assert_one_clear_error(proc, 'weights of the backbone, neck or heads '
                            'are missing', 'decode_head.conv_seg.weight',
                            'auxiliary_head', '--allow-partial')
    assert 'mIoU:' not in proc.stdout
    proc = run(args + ['--allow-partial'], cwd=tmp_path)
    assert 'missing, left at their initial values' in proc.stdout
    assert 'mIoU:' in proc.stdout


def _earlier_run(work_dir: Path) -> dict:
    work_dir.mkdir(parents=True)
    files = {
        'iter_2.pth': b'an earlier run',
        'last_checkpoint': str(work_dir / 'iter_2.pth').encode()
    }
    for name, data in files.items():
        (work_dir / name).write_bytes(data)
    return files


def test_train_keeps_an_earlier_run(ade_root, tmp_path):
    work_dir = tmp_path / 'run'
    files = _earlier_run(work_dir)
    opts = options(**seg_options(ade_root, max_iters=2))
    proc = run([TRAIN, SEG_CONFIG, '--cpu', '--work-dir', work_dir] + opts,
               cwd=tmp_path, check=False)
    _assert_one_clear_error(proc, 'WorkDirError', 'iter_2.pth, '
                            'last_checkpoint', '--resume', '--work-dir',
                            '--overwrite')
    assert all((work_dir / n).read_bytes() == d for n, d in files.items())

    # --resume with an empty last_checkpoint.
    (work_dir / 'last_checkpoint').write_text('')
    proc = run([TRAIN, SEG_CONFIG, '--cpu', '--work-dir', work_dir,
                '--resume'] + opts, cwd=tmp_path, check=False)
    _assert_one_clear_error(proc, 'last_checkpoint is empty',
                            f'--resume {work_dir / "iter_2.pth"}')
    assert (work_dir / 'iter_2.pth').read_bytes() == files['iter_2.pth']

    # --overwrite: the earlier checkpoints go, a new run takes their place.
    proc = run([TRAIN, SEG_CONFIG, '--cpu', '--work-dir', work_dir,
                '--overwrite'] + opts, cwd=tmp_path)
    assert 'deleted the earlier checkpoints' in proc.stdout
    new = load_checkpoint_file(str(work_dir / 'iter_2.pth'), 'cpu')
    assert new['meta']['iter'] == 2
    assert (work_dir / 'last_checkpoint').read_text().strip().endswith(
        'iter_2.pth')
