"""The per-codebase option handling of tools/train.py and tools/test.py."""
from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mmengine.config import Config

from fcaformer_mm.utils import entrypoint as ep

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / 'configs'
SEG = CONFIGS / 'upernet_fcaformer_l2_ade20k.py'
DET = CONFIGS / 'mask_rcnn_fcaformer_l2_fpn_3x_coco.py'
CASCADE = CONFIGS / 'cascade_mask_rcnn_fcaformer_l2_fpn_3x_coco.py'
CLS = CONFIGS / 'fcaformer_l1_in1k.py'


@pytest.fixture(scope='module')
def configs() -> dict:
    return {
        'seg': Config.fromfile(str(SEG)),
        'det': Config.fromfile(str(DET)),
        'cls': Config.fromfile(str(CLS))
    }


def test_scope_and_work_dir(tmp_path):
    cfg = ep.load_config(str(CLS), {'train_cfg.max_epochs': 2})
    assert ep.config_scope(cfg) == 'mmpretrain'
    assert cfg.work_dir == './work_dirs/fcaformer_l1_in1k'
    assert cfg.train_cfg.max_epochs == 2
    assert ep.load_config(str(CLS), work_dir=str(tmp_path)).work_dir == str(
        tmp_path)
    with pytest.raises(ValueError, match='default_scope'):
        ep.config_scope(Config(dict(default_scope='mmocr')))


def test_resume_and_amp(configs):
    cfg = copy.deepcopy(configs['cls'])
    ep.set_resume(cfg, None)
    assert cfg.resume is False
    ep.set_resume(cfg, 'auto')
    assert cfg.resume is True and cfg.load_from is None
    ep.set_resume(cfg, 'ckpt.pth')
    assert cfg.resume is True and cfg.load_from == 'ckpt.pth'
    ep.enable_amp(cfg)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'
    assert ep.has_amp_wrapper(cfg) and ep.has_amp_wrapper(configs['seg'])
    ep.enable_auto_scale_lr(cfg)
    assert cfg.auto_scale_lr.enable is True
    with pytest.raises(ValueError, match='base_batch_size'):
        ep.enable_auto_scale_lr(copy.deepcopy(configs['seg']))


def test_tta_seg_uses_the_config(configs):
    cfg = copy.deepcopy(configs['seg'])
    model = cfg.model.copy()
    ep.setup_tta(cfg)
    assert cfg.model.type == 'SegTTAModel'
    assert cfg.model.module == model
    assert cfg.test_dataloader.dataset.pipeline == cfg.tta_pipeline
    bare = Config(dict(default_scope='mmseg', model=dict(type='X')))
    with pytest.raises(ValueError, match='tta_model'):
        ep.setup_tta(bare)


@pytest.mark.parametrize('key,tta_type,pack', [
    ('det', 'DetTTAModel', 'PackDetInputs'),
    ('cls', 'mmpretrain.AverageClsScoreTTA', 'PackInputs'),
])
def test_tta_flip_defaults(configs, key, tta_type, pack):
    cfg = copy.deepcopy(configs[key])
    if key == 'det':
        # DetTTAModel merges boxes: the detector without its mask branch.
        cfg.model.roi_head.pop('mask_roi_extractor')
        cfg.model.roi_head.pop('mask_head')
    ep.setup_tta(cfg)
    assert cfg.model.type == tta_type
    assert cfg.model.module.backbone.type == 'FcaFormer'
    last = cfg.test_dataloader.dataset.pipeline[-1]
    assert last.type == 'TestTimeAug'
    assert [t.prob for t in last.transforms[0]] == [1., 0.]
    assert last.transforms[1][0].type == pack


@pytest.mark.parametrize('config', [DET, CASCADE])
def test_tta_of_instance_segmentation_is_a_clear_error(config):
    cfg = Config.fromfile(str(config))
    model = copy.deepcopy(cfg.model)
    with pytest.raises(ValueError, match='merges boxes only.*without --tta'):
        ep.setup_tta(cfg)
    assert cfg.model == model  # left as it was


def test_out_and_visualization(configs, tmp_path):
    seg = copy.deepcopy(configs['seg'])
    ep.setup_out(seg, str(tmp_path))
    assert seg.test_evaluator.output_dir == str(tmp_path)
    assert seg.test_evaluator.keep_results is True
    ep.setup_visualization(seg, show_dir=str(tmp_path))
    assert seg.default_hooks.visualization.draw is True
    assert seg.visualizer.save_dir == str(tmp_path)

    det = copy.deepcopy(configs['det'])
    ep.setup_out(det, 'x.pkl')  # a dumper is added to the runner instead
    assert 'output_dir' not in det.test_evaluator
    ep.setup_visualization(det, show=True, show_dir='vis', wait_time=1)
    hook = det.default_hooks.visualization
    assert (hook.draw, hook.show, hook.wait_time,
            hook.test_out_dir) == (True, True, 1, 'vis')
    with pytest.raises(ValueError, match='.pkl'):
        ep.add_out_dumper(None, det, 'results.json')

    cls = copy.deepcopy(configs['cls'])
    ep.setup_visualization(cls, show_dir='vis')
    assert cls.default_hooks.visualization.enable is True
    assert cls.default_hooks.visualization.out_dir == 'vis'


# --------------------------------------------------------------------------
# The work-dir guard of tools/train.py.
# --------------------------------------------------------------------------
def _earlier_run(work_dir: Path) -> dict:
    """A work dir as an earlier run leaves it; returns its files' bytes."""
    work_dir.mkdir(parents=True, exist_ok=True)
    files = {
        'epoch_1.pth': b'weights of epoch 1',
        'best_accuracy_top1_epoch_1.pth': b'best',
        'last_checkpoint': str(work_dir / 'epoch_1.pth').encode(),
        '20261130_120000.log': b'log',
    }
    for name, data in files.items():
        (work_dir / name).write_bytes(data)
    return files


def _unchanged(work_dir: Path, files: dict) -> bool:
    return all((work_dir / n).read_bytes() == d for n, d in files.items())


def test_work_dir_with_checkpoints_is_refused(tmp_path):
    work_dir = tmp_path / 'run'
    files = _earlier_run(work_dir)
    with pytest.raises(ep.WorkDirError) as info:
        ep.guard_work_dir(str(work_dir), resume=None)
    message = str(info.value)
    for expected in ('best_accuracy_top1_epoch_1.pth, epoch_1.pth, '
                     'last_checkpoint', 'last_checkpoint names',
                     '--resume', '--work-dir', '--overwrite'):
        assert expected in message, expected
    assert _unchanged(work_dir, files)
    # A fresh or empty work dir, and one with logs only, are fine.
    assert ep.guard_work_dir(str(tmp_path / 'new'), resume=None) == []
    (tmp_path / 'logs').mkdir()
    (tmp_path / 'logs' / 'run.log').write_text('log')
    assert ep.guard_work_dir(str(tmp_path / 'logs'), resume=None) == []


def test_work_dir_resume_and_overwrite(tmp_path):
    work_dir = tmp_path / 'run'
    files = _earlier_run(work_dir)
    assert ep.guard_work_dir(str(work_dir), resume='auto') == []
    assert ep.guard_work_dir(
        str(work_dir), resume=str(work_dir / 'epoch_1.pth')) == []
    with pytest.raises(ep.WorkDirError, match='give one of them'):
        ep.guard_work_dir(str(work_dir), resume='auto', overwrite=True)
    # Other ranks of a distributed run do not delete.
    assert ep.guard_work_dir(str(work_dir), None, overwrite=True,
                             delete=False)
    assert _unchanged(work_dir, files)
    deleted = ep.guard_work_dir(str(work_dir), None, overwrite=True)
    assert deleted == ['best_accuracy_top1_epoch_1.pth', 'epoch_1.pth',
                       'last_checkpoint']
    assert sorted(p.name for p in work_dir.iterdir()) == [
        '20261130_120000.log'
    ]


def test_auto_resume_needs_a_checkpoint_to_resume_from(tmp_path):
    work_dir = tmp_path / 'run'
    _earlier_run(work_dir)
    (work_dir / 'last_checkpoint').write_text('')
    with pytest.raises(ep.WorkDirError,
                       match=r'last_checkpoint is empty.*--resume '
                       r'\S+epoch_1\.pth'):
        ep.guard_work_dir(str(work_dir), resume='auto')
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'epoch_9.pth'))
    with pytest.raises(ep.WorkDirError,
                       match=r'names \S+epoch_9\.pth, which does not exist'):
        ep.guard_work_dir(str(work_dir), resume='auto')
    (work_dir / 'last_checkpoint').unlink()
    with pytest.raises(ep.WorkDirError,
                       match='no last_checkpoint file.*would start a new run'):
        ep.guard_work_dir(str(work_dir), resume='auto')
    # Nothing at all to resume: a new run, as mmengine does.
    assert ep.guard_work_dir(str(tmp_path / 'empty'), resume='auto') == []


def _checkpoint_dir_run(tmp_path: Path) -> tuple[Path, Path]:
    """A work dir whose checkpoints went to ``out_dir/<basename>``."""
    work_dir = tmp_path / 'run'
    saved = tmp_path / 'out' / 'run'
    saved.mkdir(parents=True)
    (saved / 'epoch_1.pth').write_bytes(b'earlier run')
    return work_dir, saved


def test_checkpoint_dir_follows_the_checkpoint_hook(tmp_path):
    cfg = Config(dict(work_dir=str(tmp_path / 'run')))
    assert ep.checkpoint_dir(cfg) == str(tmp_path / 'run')
    cfg.default_hooks = dict(
        checkpoint=dict(type='CheckpointHook', out_dir=str(tmp_path / 'o')))
    assert ep.checkpoint_dir(cfg) == str(tmp_path / 'o' / 'run')
    cfg.default_hooks.checkpoint.out_dir = 's3://bucket/ckpts'
    assert ep.checkpoint_dir(cfg) is None


def test_guard_covers_the_checkpoint_out_dir(tmp_path):
    work_dir, saved = _checkpoint_dir_run(tmp_path)
    with pytest.raises(ep.WorkDirError,
                       match=f'(?s)checkpoint dir {saved} .*'
                       f"{saved / 'epoch_1.pth'}.*--overwrite"):
        ep.guard_work_dir(str(work_dir), None, ckpt_dir=str(saved))
    assert (saved / 'epoch_1.pth').read_bytes() == b'earlier run'
    assert ep.guard_work_dir(str(work_dir), None, overwrite=True,
                             ckpt_dir=str(saved)) == [
                                 str(saved / 'epoch_1.pth')]
    assert not (saved / 'epoch_1.pth').exists()


def test_overwrite_never_deletes_load_from(tmp_path):
    work_dir = tmp_path / 'run'
    files = _earlier_run(work_dir)
    # load_from through another spelling of the same file.
    (tmp_path / 'link').symlink_to(work_dir)
    with pytest.raises(ep.WorkDirError,
                       match=r'delete epoch_1\.pth, the checkpoint that '
                       r'load_from=.*Copy it out'):
        ep.guard_work_dir(str(work_dir), None, overwrite=True,
                          load_from=str(tmp_path / 'link' / 'epoch_1.pth'))
    assert _unchanged(work_dir, files)
    # load_from elsewhere: --overwrite goes on.
    elsewhere = tmp_path / 'pretrained.pth'
    elsewhere.write_bytes(b'pretrained')
    assert 'epoch_1.pth' in ep.guard_work_dir(
        str(work_dir), None, overwrite=True, load_from=str(elsewhere))
    assert elsewhere.read_bytes() == b'pretrained'


def test_resume_from_another_run_is_refused(tmp_path):
    work_dir = tmp_path / 'run'
    files = _earlier_run(work_dir)
    other = tmp_path / 'other' / 'epoch_3.pth'
    other.parent.mkdir()
    other.write_bytes(b'another run')
    with pytest.raises(ep.WorkDirError) as info:
        ep.guard_work_dir(str(work_dir), resume=str(other))
    message = str(info.value)
    for expected in ('not one of', 'best_accuracy_top1_epoch_1.pth, '
                     'epoch_1.pth', '--work-dir DIR',
                     f'--resume {work_dir}'):
        assert expected in message, expected
    assert _unchanged(work_dir, files)
    # One of the work dir's own checkpoints, by any spelling: that run.
    (tmp_path / 'link').symlink_to(work_dir)
    assert ep.guard_work_dir(
        str(work_dir), resume=str(tmp_path / 'link' / 'epoch_1.pth')) == []
    # Into a new work dir: nothing to replace.
    assert ep.guard_work_dir(str(tmp_path / 'new'), resume=str(other)) == []
    # A checkpoint saved to out_dir/<basename> belongs to the run too.
    work_dir2, saved = _checkpoint_dir_run(tmp_path / 'b')
    assert ep.guard_work_dir(str(work_dir2), str(saved / 'epoch_1.pth'),
                             ckpt_dir=str(saved)) == []


_HOLD_LOCK = '''
import sys
from fcaformer_mm.utils.entrypoint import WorkDirLock
lock = WorkDirLock(sys.argv[1])
lock.acquire()
print('locked', flush=True)
sys.stdin.read()
'''


def test_work_dir_lock_one_run_at_a_time(tmp_path):
    work_dir = tmp_path / 'run'
    holder = subprocess.Popen(
        [sys.executable, '-c', _HOLD_LOCK, str(work_dir)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, 'PYTHONPATH': str(REPO)})
    try:
        assert holder.stdout.readline().strip() == 'locked'
        with pytest.raises(ep.WorkDirError,
                           match=rf'Another run is training in .*run '
                           rf'\(pid {holder.pid} on .*another --work-dir'):
            ep.WorkDirLock(str(work_dir)).acquire()
    finally:
        # Killed: no clean-up runs, the kernel drops the lock.
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with ep.WorkDirLock(str(work_dir)) as lock:
        assert lock.locked
        with pytest.raises(ep.WorkDirError, match='Another run'):
            ep.WorkDirLock(str(work_dir)).acquire()
    assert not lock.locked
    ep.WorkDirLock(str(work_dir)).acquire()  # released on exit


# --------------------------------------------------------------------------
# Config errors and the config dump.
# --------------------------------------------------------------------------
def test_syntax_error_names_file_and_line(tmp_path):
    base = tmp_path / 'base.py'
    base.write_text('a = 1\nb = dict(x=1,\n    y=2 z=3)\n')
    child = tmp_path / 'child.py'
    child.write_text("_base_ = ['./base.py']\nc = 2\n")
    with pytest.raises(SyntaxError,
                       match=r'config \S*base\.py, line 3: .*\n    '
                       r'    y=2 z=3\)\n +\^'):
        ep.read_config(str(child))
    base.write_text('a = 1\n')
    child.write_text("_base_ = ['./base.py']\nc = (2,\n")
    with pytest.raises(SyntaxError, match=r'child\.py, line 2'):
        ep.load_config(str(child))


def test_unknown_cfg_options_key_is_refused():
    with pytest.raises(ep.ConfigOptionError,
                       match=r"trian_cfg.*ignored\. Did you mean 'train_cfg' "
                       r'\(train_cfg\.max_epochs=\.\.\.\)'):
        ep.load_config(str(CLS), {'trian_cfg.max_epochs': 5})
    # Keys the Runner reads are known even where the config lacks them.
    cfg = ep.load_config(str(CLS), {'experiment_name': 'x',
                                    'train_cfg.max_epochs': 5})
    assert cfg.experiment_name == 'x' and 'trian_cfg' not in cfg
    from fcaformer_mm.utils.model_builder import build_model_from_config
    with pytest.raises(ep.ConfigOptionError, match="'model'"):
        build_model_from_config(str(CLS), {'modle.backbone.arch': 'l1'})


def test_same_file_by_identity(tmp_path):
    real = tmp_path / 'dir' / 'src.pth'
    real.parent.mkdir()
    real.write_bytes(b'official')
    (tmp_path / 'dirlink').symlink_to(real.parent)
    os.link(real, tmp_path / 'hard.pth')
    for other in (tmp_path / 'dirlink' / 'src.pth', tmp_path / 'hard.pth',
                  tmp_path / 'dir' / '..' / 'dir' / 'src.pth'):
        assert ep.same_file(str(real), str(other))
        with pytest.raises(ValueError, match='same file as --checkpoint'):
            ep.refuse_overwriting_inputs(str(other),
                                         {'--checkpoint': str(real)})
    assert not ep.same_file(str(real), str(tmp_path / 'new.pth'))
    ep.refuse_overwriting_inputs(str(tmp_path / 'new.pth'),
                                 {'--checkpoint': str(real), 'x': None})


def test_config_dump_never_replaces_a_file(tmp_path):
    """``tools/train.py WD/my.py --work-dir WD``: the user's config stays
    as written; mmengine's dump goes next to it."""
    work_dir = tmp_path / 'wd'
    work_dir.mkdir()
    mine = work_dir / 'my.py'
    text = (f"_base_ = ['{CLS}']\n"
            '# my notes: these comments must survive\n'
            'train_cfg = dict(max_epochs=3)\n')
    mine.write_text(text)
    options = {'model.backbone.arch': 'l1', 'model.backbone.init_cfg': None}
    for _ in range(2):
        cfg = ep.load_config(str(mine), options, str(work_dir))
        runner = ep.build_runner(cfg)
        assert runner.experiment_name.startswith('my_')
    assert mine.read_text() == text
    dumps = sorted(work_dir.glob('my.*.py'))
    assert len(dumps) == 2
    assert all('max_epochs=3' in d.read_text() for d in dumps)
    # A work dir without the file: mmengine's own name.
    cfg = ep.load_config(str(mine), options, str(tmp_path / 'fresh'))
    assert ep.protect_config_dump(cfg) is None
    assert cfg.filename == str(mine)
