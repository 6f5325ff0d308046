"""The torch.load compatibility layer: resume works, unsafe pickles do not."""
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.logging import HistoryBuffer
from mmengine.runner import Runner, load_checkpoint
from mmengine.runner.checkpoint import CheckpointLoader
from toys import Regressor, Toy

import fcaformer_mm  # noqa: F401  (applies the layer)
from fcaformer_mm import compat


def _runner(work_dir: Path, max_iters: int, resume: bool) -> Runner:
    torch.manual_seed(0)  # the same initial weights for every run
    return Runner(
        model=Regressor(),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=Toy(32),
            sampler=dict(type='DefaultSampler', shuffle=True),
            batch_size=4,
            collate_fn=dict(type='default_collate')),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.01)),
        param_scheduler=[
            dict(type='LinearLR', start_factor=0.1, by_epoch=False,
                 begin=0, end=3),
            dict(type='PolyLR', by_epoch=False, begin=3, end=10),
        ],
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=4,
                            by_epoch=False),
            logger=dict(type='LoggerHook', interval=1)),
        resume=resume,
        randomness=dict(seed=0),
        default_scope='mmengine')


def test_runner_resumes_from_its_own_checkpoint(tmp_path):
    """Train 4 iters, save; resume to 8; compare with an unbroken 8 iters."""
    first = _runner(tmp_path / 'a', max_iters=4, resume=False)
    first.train()
    ckpt_path = tmp_path / 'a' / 'iter_4.pth'
    assert ckpt_path.is_file()

    # The file really needs the allow-list, which holds inside the
    # package's loads only: a plain torch.load refuses HistoryBuffer.
    with pytest.raises(pickle.UnpicklingError, match='HistoryBuffer'):
        torch.load(ckpt_path, weights_only=True)
    ckpt = compat.load_checkpoint_file(str(ckpt_path))
    assert isinstance(ckpt['message_hub']['log_scalars']['train/lr'],
                      HistoryBuffer)

    resumed = _runner(tmp_path / 'a', max_iters=8, resume=True)
    resumed.train()
    assert resumed.iter == 8
    history = resumed.message_hub.get_scalar('train/loss')
    # 4 losses from before the checkpoint + 4 after it.
    assert len(history.data[0]) == 8

    straight = _runner(tmp_path / 'b', max_iters=8, resume=False)
    straight.train()
    for p_resumed, p_straight in zip(resumed.model.parameters(),
                                     straight.model.parameters()):
        torch.testing.assert_close(p_resumed, p_straight)
    opt_r = resumed.optim_wrapper.optimizer
    opt_s = straight.optim_wrapper.optimizer
    assert opt_r.param_groups[0]['lr'] == pytest.approx(
        opt_s.param_groups[0]['lr'])
    for st_r, st_s in zip(opt_r.state.values(), opt_s.state.values()):
        torch.testing.assert_close(st_r['exp_avg_sq'], st_s['exp_avg_sq'])
        assert float(st_r['step']) == float(st_s['step']) == 8


class _Evil:
    """Runs a shell command when unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


def test_malicious_checkpoint_is_refused(tmp_path):
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {'w': torch.ones(1)}, 'meta': _Evil(marker)},
               path)
    model = nn.Linear(1, 1)
    # One error that names the object and the ways out.
    with pytest.raises(pickle.UnpicklingError) as info:
        load_checkpoint(model, str(path), map_location='cpu')
    assert isinstance(info.value, compat.UnsafeCheckpointError)
    message = str(info.value)
    assert str(path) in message and '`posix.system`' in message
    assert 'Ways out' in message and 'weights_only=False' in message
    assert 'add_safe_globals' not in message  # not for a function
    assert info.value.__cause__ is None and info.value.__suppress_context__
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)
    assert not marker.exists()


class PlainRecord:
    """A plain data class, unknown to the allow-list."""

    def __init__(self):
        self.value = 1


def test_unknown_class_is_refused_with_the_allow_list_hint(tmp_path):
    path = tmp_path / 'record.pth'
    torch.save({'state_dict': {}, 'meta': PlainRecord()}, path)
    with pytest.raises(pickle.UnpicklingError,
                       match=r'\.PlainRecord`.*add_safe_globals'):
        load_checkpoint(nn.Linear(1, 1), str(path))


class _Reach:
    """Pickles as getattr(HistoryBuffer, name): what the stand-in gates."""

    def __init__(self, name):
        self.name = name

    def __reduce__(self):
        return (getattr, (HistoryBuffer, self.name))


@pytest.mark.parametrize('name', ['__init__', '__class__', 'update'])
def test_getattr_stand_in_refuses_everything_else(tmp_path, name):
    path = tmp_path / 'reach.pth'
    torch.save({'x': _Reach(name)}, path)
    with pytest.raises(compat.UnsafeCheckpointError,
                       match=rf"holds getattr\(HistoryBuffer, '{name}'\)"):
        compat.load_checkpoint_file(str(path))


def test_getattr_stand_in_allows_statistics_methods(tmp_path):
    """The name of a statistics method passes (as a name: the methods are
    the class's own, never taken from the file)."""
    path = tmp_path / 'ok.pth'
    torch.save({'x': _Reach('mean')}, path)
    assert compat.load_checkpoint_file(str(path))['x'] == 'mean'


def test_numpy_values_round_trip(tmp_path):
    path = tmp_path / 'np.pth'
    value = {'array': np.arange(6, dtype=np.float32).reshape(2, 3),
             'scalar': np.float64(2.5), 'int': np.int64(3),
             'dtype': np.dtype('int16')}
    torch.save(value, path)
    loaded = compat.load_checkpoint_file(str(path))
    np.testing.assert_array_equal(loaded['array'], value['array'])
    assert loaded['scalar'] == 2.5 and loaded['int'] == 3
    assert loaded['dtype'] == np.dtype('int16')


def test_apply_is_idempotent_and_documented():
    first = compat.apply()
    second = compat.apply()
    assert first == second and first['applied']
    assert compat.is_applied()
    names = compat.safe_global_names()
    assert 'mmengine.logging.history_buffer.HistoryBuffer' in names
    assert 'builtins.getattr' in names
    assert len(names) == len(set(names))


# --------------------------------------------------------------------------
# Every scheme of mmengine's CheckpointLoader reads with weights_only=True.
# --------------------------------------------------------------------------
#: What a refused payload's error says: the object and the ways out.
UNSAFE = r'Refused to load the checkpoint .*`posix\.system`.*Ways out'
#: The errors of files that are not checkpoints (before the loaders of
#: fcaformer_mm.compat: KeyError, EOFError, ...).
NOT_A_CHECKPOINT = (ValueError, FileNotFoundError)

SCHEME_EXAMPLES = [
    'work_dirs/x.pth', '/abs/x.pth', 'http://host/x.pth', 'https://host/x.pth',
    'open-mmlab://resnet50_v1c', 'openmmlab://resnet50_v1c',
    'torchvision://resnet50', 'modelzoo://resnet50', 'mmcls://resnet50',
    'pavi://model', 's3://bucket/x.pth', 'petrel://bucket/x.pth',
    'cluster:s3://bucket/x.pth'
]


@pytest.mark.parametrize('path', SCHEME_EXAMPLES)
def test_every_scheme_is_served_by_the_safe_loaders(path):
    loader = CheckpointLoader._get_checkpoint_loader(path)
    assert loader.__module__ == 'fcaformer_mm.compat', loader
    assert loader.__name__.startswith('load_from_')  # mmengine's log line


def test_apply_reports_the_loaders():
    result = compat.apply()
    assert set(result['loaders']) == set(compat.SCHEMES)
    assert {'', 'http://', 'https://', 'open-mmlab://', 'torchvision://',
            'mmcls://'} <= set(result['loaders'])


def test_payload_url_is_refused_by_load_checkpoint(payload):
    url, _, marker = payload
    with pytest.raises(pickle.UnpicklingError, match=UNSAFE) as info:
        load_checkpoint(nn.Linear(1, 1), url, map_location='cpu')
    assert url in str(info.value)
    assert not marker.exists()


def test_payload_url_is_refused_by_pretrained_init_cfg(payload):
    from fcaformer_mm.models.backbones.fcaformer import FcaFormer
    url, _, marker = payload
    model = FcaFormer(
        dict(embed_dims=[16, 32, 32, 48], depths=[1, 1, 2, 1],
             num_heads=[2, 3]),
        init_cfg=dict(type='Pretrained', checkpoint=url))
    with pytest.raises(pickle.UnpicklingError, match=UNSAFE):
        model.init_weights()
    assert not marker.exists()


def test_payload_open_mmlab_name_is_refused(payload, tmp_path, monkeypatch):
    """``open-mmlab://NAME`` resolves through $MMENGINE_HOME/open_mmlab.json
    to the URL of the payload."""
    url, _, marker = payload
    home = tmp_path / 'mmengine_home'
    home.mkdir()
    (home / 'open_mmlab.json').write_text(json.dumps({'payload_net': url}))
    monkeypatch.setenv('MMENGINE_HOME', str(home))
    for name in ('open-mmlab://payload_net', 'openmmlab://payload_net'):
        with pytest.raises(pickle.UnpicklingError, match=UNSAFE):
            CheckpointLoader.load_checkpoint(name, map_location='cpu')
    with pytest.raises(FileNotFoundError,
                       match='not an open-mmlab model name'):
        CheckpointLoader.load_checkpoint('open-mmlab://no_such_net')
    assert not marker.exists()


@pytest.mark.parametrize('resume', [False, True], ids=['load_from', 'resume'])
def test_payload_url_is_refused_by_the_runner(payload, tmp_path, resume):
    url, _, marker = payload
    runner = _runner(tmp_path / 'run', max_iters=1, resume=resume)
    runner._load_from = url
    with pytest.raises(pickle.UnpicklingError, match=UNSAFE):
        runner.train()
    assert not marker.exists()


def test_url_checkpoint_loads_and_is_cached(file_server, tmp_path):
    path = file_server.root / 'good.pth'
    torch.save({'state_dict': {'weight': torch.full((1, 1), 3.),
                               'bias': torch.zeros(1)},
                'meta': {'epoch': 1, 'np': np.float64(0.5)}}, path)
    url = file_server.url('good.pth')
    model = nn.Linear(1, 1)
    ckpt = load_checkpoint(model, url, map_location='cpu')
    assert float(model.weight) == 3. and ckpt['meta']['epoch'] == 1
    cached = Path(compat.download_cache_path(url))
    assert cached.parent == tmp_path / 'torch_home' / 'hub' / 'checkpoints'
    assert cached.name.startswith('good.') and cached.suffix == '.pth'
    assert cached.read_bytes() == path.read_bytes()
    path.unlink()  # read from the cache from now on
    assert CheckpointLoader.load_checkpoint(url)['meta']['epoch'] == 1


def test_url_errors_are_clear(file_server, tmp_path):
    with pytest.raises(FileNotFoundError,
                       match='Could not download the checkpoint .*404'):
        CheckpointLoader.load_checkpoint(file_server.url('missing.pth'))
    (file_server.root / 'page.pth').write_text(
        '<!DOCTYPE html><html><body>Sign in</body></html>')
    url = file_server.url('page.pth')
    with pytest.raises(ValueError) as info:
        CheckpointLoader.load_checkpoint(url)
    message = str(info.value)
    assert url in message and 'HTML' in message
    assert 'Delete ' in message and 'to download it again' in message


def _bad_files(root: Path) -> dict:
    """Files that are not checkpoints, and what the error must say."""
    root.mkdir(parents=True, exist_ok=True)
    text = root / 'config.py'
    text.write_text("model = dict(type='FcaFormer')\n")
    empty = root / 'empty.pth'
    empty.write_bytes(b'')
    lfs = root / 'lfs.pth'
    lfs.write_text('version https://git-lfs.github.com/spec/v1\n'
                   'oid sha256:0123\nsize 1234\n')
    folder = root / 'run'
    folder.mkdir(exist_ok=True)
    (folder / 'epoch_3.pth').write_bytes(b'')
    cut = root / 'cut.pth'
    torch.save({'w': torch.ones(100)}, cut)
    cut.write_bytes(cut.read_bytes()[:200])
    return {
        text: 'is a text file',
        empty: 'is empty \\(0 bytes\\)',
        lfs: 'Git LFS pointer.*git lfs pull',
        folder: 'is a directory, not a file. It holds epoch_3.pth',
        cut: 'cut short or damaged',
        root / 'nope.pth': 'does not exist',
    }


def test_files_that_are_not_checkpoints_give_clear_errors(tmp_path):
    from fcaformer_mm.models.backbones.fcaformer import FcaFormer
    for path, expected in _bad_files(tmp_path / 'bad').items():
        with pytest.raises(NOT_A_CHECKPOINT, match=expected) as info:
            CheckpointLoader.load_checkpoint(str(path))
        assert str(path) in str(info.value)
        model = FcaFormer(
            dict(embed_dims=[16, 32, 32, 48], depths=[1, 1, 2, 1],
                 num_heads=[2, 3]),
            init_cfg=dict(type='Pretrained', checkpoint=str(path)))
        with pytest.raises(NOT_A_CHECKPOINT, match=expected):
            model.init_weights()


def test_unknown_scheme_is_named():
    with pytest.raises(FileNotFoundError,
                       match=r'No checkpoint loader knows the scheme '
                       r'mmpretrain://.*mmcls://'):
        CheckpointLoader.load_checkpoint('mmpretrain://resnet50_8xb32_in1k')
