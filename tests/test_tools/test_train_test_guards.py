"""tools/train.py and tools/test.py never replace what a user made, and
stop with an error that names the problem and the fix: the work-dir lock,
the guards of ``out_dir``, ``load_from`` and ``--resume``, the config
dump, config errors, ``--out`` and ``--deploy``.

The refusals run the tools' ``main`` in this process (they stop before a
Runner is built, or just after); the lock after a killed run and the
config dump run ``tools/train.py`` as a script on a tiny classifier."""
from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from fcaformer_mm.compat import load_checkpoint_file
from fcaformer_mm.utils.entrypoint import WorkDirLock

REPO = Path(__file__).resolve().parents[2]
CLS_CONFIG = REPO / 'configs' / 'fcaformer_l1_in1k.py'
#: The smallest FcaFormer-L1 that the classifier config still builds.
TINY = ['model.backbone.arch._delete_=True',
        'model.backbone.arch.embed_dims=(16,32,48,64)',
        'model.backbone.arch.depths=(1,1,2,1)',
        'model.backbone.arch.num_heads=(2,2)',
        'model.head.in_channels=64']


def _tool(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f'fcaformer_tool_{name}', REPO / 'tools' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def train() -> ModuleType:
    return _tool('train')


@pytest.fixture(scope='module')
def test_tool() -> ModuleType:
    return _tool('test')


def _data(root: Path) -> list[str]:
    """Tiny sizes on the synthetic ImageNet: two iterations per epoch."""
    opts = []
    for split in ('train', 'val', 'test'):
        opts += [f'{split}_dataloader.dataset.data_root={root}',
                 f'{split}_dataloader.batch_size=4',
                 f'{split}_dataloader.num_workers=0',
                 f'{split}_dataloader.persistent_workers=False']
    return opts + [
        'train_dataloader.dataset.pipeline.1.scale=64',
        'val_dataloader.dataset.pipeline.1.scale=73',
        'val_dataloader.dataset.pipeline.2.crop_size=64',
        'test_dataloader.dataset.pipeline.1.scale=73',
        'test_dataloader.dataset.pipeline.2.crop_size=64',
        'train_cfg.max_epochs=1', 'default_hooks.logger.interval=1'
    ]


def _refused(tool: ModuleType, argv: list, *expected: str) -> str:
    """Run ``tool.main(argv)``; it must stop with a message holding each
    of ``expected``."""
    with pytest.raises(SystemExit) as info:
        tool.main([str(a) for a in argv])
    message = str(info.value.code)
    for text in expected:
        assert text in message, (text, message)
    return message


def _write(path: Path, data: bytes) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {path: data}


def _unchanged(files: dict) -> bool:
    return all(p.read_bytes() == d for p, d in files.items())


# --------------------------------------------------------------------------
# tools/train.py: refusals.
# --------------------------------------------------------------------------
def test_config_errors_name_file_line_and_key(train, tmp_path):
    bad = tmp_path / 'bad.py'
    bad.write_text(f"_base_ = ['{CLS_CONFIG}']\n"
                   'train_cfg = dict(max_epochs=5 val_interval=1)\n')
    _refused(train, [bad, '--work-dir', tmp_path / 'wd'],
             f'Syntax error in the config {bad}, line 2',
             'dict(max_epochs=5 val_interval=1)')
    _refused(train, [CLS_CONFIG, '--work-dir', tmp_path / 'wd',
                     '--cfg-options', 'trian_cfg.max_epochs=5'],
             "'trian_cfg' is not a top-level key",
             "Did you mean 'train_cfg' (train_cfg.max_epochs=...)")
    assert not (tmp_path / 'wd').exists()


def test_checkpoints_in_out_dir_are_kept(train, tmp_path):
    work_dir = tmp_path / 'run'
    files = _write(tmp_path / 'out' / 'run' / 'epoch_1.pth', b'earlier')
    _refused(train, [CLS_CONFIG, '--work-dir', work_dir, '--cfg-options',
                     f'default_hooks.checkpoint.out_dir={tmp_path / "out"}'],
             'WorkDirError', str(tmp_path / 'out' / 'run' / 'epoch_1.pth'),
             'out_dir', '--overwrite')
    assert _unchanged(files)
    # out_dir/<work dir name> is the work dir itself, spelled through a
    # link: one directory, one lock, and its checkpoint is found.
    (tmp_path / 'link').symlink_to(tmp_path)
    files = _write(work_dir / 'epoch_2.pth', b'earlier')
    message = _refused(
        train, [CLS_CONFIG, '--work-dir', work_dir, '--cfg-options',
                f'default_hooks.checkpoint.out_dir={tmp_path / "link"}'],
        'WorkDirError', 'epoch_2.pth', '--overwrite')
    assert 'Another run' not in message
    assert _unchanged(files)


def test_overwrite_keeps_load_from(train, tmp_path):
    work_dir = tmp_path / 'run'
    files = _write(work_dir / 'epoch_1.pth', b'start from me')
    _refused(train, [CLS_CONFIG, '--work-dir', work_dir, '--overwrite',
                     '--cfg-options', f'load_from={work_dir / "epoch_1.pth"}'],
             '--overwrite would delete epoch_1.pth', 'load_from=',
             'Copy it out')
    assert _unchanged(files)


def test_resume_into_another_runs_work_dir(train, tmp_path):
    work_dir = tmp_path / 'run'
    files = _write(work_dir / 'epoch_1.pth', b'this run')
    files.update(_write(work_dir / 'last_checkpoint',
                        str(work_dir / 'epoch_1.pth').encode()))
    other = tmp_path / 'other' / 'epoch_4.pth'
    files.update(_write(other, b'another run'))
    _refused(train, [CLS_CONFIG, '--work-dir', work_dir, '--resume', other],
             'WorkDirError', f'--resume {other}', 'another run: epoch_1.pth',
             '--work-dir DIR')
    assert _unchanged(files)


def test_one_run_per_work_dir(train, tmp_path):
    work_dir = tmp_path / 'run'
    with WorkDirLock(str(work_dir)):
        _refused(train, [CLS_CONFIG, '--work-dir', work_dir],
                 'WorkDirError: Another run is training in',
                 'another --work-dir')
    assert list(work_dir.iterdir()) == [work_dir / WorkDirLock.NAME]


_HOLD_LOCK = '''
import sys
from fcaformer_mm.utils.entrypoint import WorkDirLock
WorkDirLock(sys.argv[1]).acquire()
print('locked', flush=True)
sys.stdin.read()
'''


def test_killed_run_releases_the_work_dir_and_config_stays(
        tmp_path, imagenet_root):
    """A run killed with SIGKILL leaves no lock behind: the next run
    trains. That run's config lies in its work dir, with comments; the
    config dump of mmengine goes next to it."""
    from test_e2e.conftest import tool_env
    env = tool_env()
    work_dir = tmp_path / 'wd'
    work_dir.mkdir()
    config = work_dir / 'my.py'
    text = (f"_base_ = ['{CLS_CONFIG}']\n"
            '# My notes, which the dump would drop.\n'
            'model = dict(backbone=dict(init_cfg=None))\n')
    config.write_text(text)
    holder = subprocess.Popen(
        [sys.executable, '-c', _HOLD_LOCK, str(work_dir)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == 'locked'
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    proc = subprocess.run(
        [sys.executable, str(REPO / 'tools' / 'train.py'), str(config),
         '--work-dir', str(work_dir), '--cpu', '--cfg-options'] + TINY +
        _data(imagenet_root), cwd=tmp_path, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    assert proc.returncode == 0, proc.stdout[-6000:]
    ckpt = load_checkpoint_file(str(work_dir / 'epoch_1.pth'), 'cpu')
    assert ckpt['meta']['epoch'] == 1
    assert config.read_text() == text
    dumps = list(work_dir.glob('my.*.py'))
    assert len(dumps) == 1 and 'init_cfg=None' in dumps[0].read_text()
    assert f'{config} exists: the config is dumped to' in proc.stdout


# --------------------------------------------------------------------------
# tools/test.py.
# --------------------------------------------------------------------------
def test_deploy_is_opt_in(test_tool, capsys):
    assert test_tool.parse_args(['c.py', 'x.pth']).deploy is False
    assert test_tool.parse_args(['c.py', 'x.pth', '--deploy']).deploy is True
    with pytest.raises(SystemExit) as info:
        test_tool.parse_args(['c.py', 'x.pth', '--no-deploy'])
    assert info.value.code == 2
    assert 'unrecognized arguments: --no-deploy' in capsys.readouterr().err


def test_out_never_replaces_the_checkpoint(test_tool, tmp_path):
    ckpt = tmp_path / 'model.pkl'
    torch.save({'state_dict': {}}, ckpt)
    original = ckpt.read_bytes()
    (tmp_path / 'link').symlink_to(tmp_path)
    _refused(test_tool, [CLS_CONFIG, ckpt, '--out',
                         tmp_path / 'link' / 'model.pkl'],
             '--out', 'is the same file as the checkpoint')
    assert ckpt.read_bytes() == original


SWAP_HOOK = '''
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module(force=True)
class WeightEMASwapHook(Hook):
    """Swaps averaged weights in before testing: not an EMAHook."""
'''


def test_deploy_refused_with_another_weight_swapping_hook(
        test_tool, tmp_path, imagenet_root, monkeypatch):
    (tmp_path / 'swap_hooks_for_test.py').write_text(SWAP_HOOK)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tmp_path / 'swap.py'
    config.write_text(
        f"_base_ = ['{CLS_CONFIG}']\n"
        "custom_imports = dict(imports=['fcaformer_mm', "
        "'swap_hooks_for_test'], allow_failed_imports=False)\n"
        "custom_hooks = [dict(type='WeightEMASwapHook')]\n")
    ckpt = tmp_path / 'weights.pth'
    torch.save({'state_dict': {}}, ckpt)
    _refused(test_tool, [config, ckpt, '--deploy', '--allow-partial',
                         '--work-dir', tmp_path / 'wd', '--cfg-options'] +
             TINY + _data(imagenet_root),
             'DeployError: --deploy: WeightEMASwapHook swaps weights',
             "not mmengine's EMAHook", 'Test without --deploy')
