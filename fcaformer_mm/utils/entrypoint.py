"""The parts of ``tools/train.py`` and ``tools/test.py`` that depend on
the codebase.

One pair of tools serves the configs of all three host codebases; the
config's ``default_scope`` (``mmseg``, ``mmdet`` or ``mmpretrain``) picks
the few behaviours in which their own tools differ:

* ``--tta``: mmseg needs ``tta_model`` and ``tta_pipeline`` in the config;
  mmdet and mmpretrain fall back to a horizontal-flip TTA when the config
  has none (as their tools do).
* ``--out``: a directory of predicted masks for mmseg (``IoUMetric``'s
  ``output_dir``); a pickle of the predictions for mmdet
  (``DumpDetResults``, masks as RLE) and mmpretrain (``DumpResults``).
* ``--show`` / ``--show-dir``: each codebase's ``VisualizationHook`` takes
  its switches under different names.

Everything else (config loading, work dir, resume, AMP, the CPU switch, the
Runner) is shared, and so are the rules that keep the tools from replacing
what a user made:

* :func:`load_config` names the file and line of a config's syntax error
  and refuses a ``--cfg-options`` key that is unknown at the top level
  (:func:`check_cfg_options`, with the closest known key);
* :func:`guard_work_dir` keeps ``tools/train.py`` from replacing the
  checkpoints of an earlier run, in the work dir and in
  ``CheckpointHook.out_dir`` (:func:`checkpoint_dir`);
* :class:`WorkDirLock` lets one training run at a time use a work dir, and
  :func:`claim_work_dir` locks and checks it for ``tools/train.py``;
* :func:`build_runner` never lets mmengine's config dump replace a file
  that is already there (:func:`protect_config_dump`);
* :func:`same_file` and :func:`refuse_overwriting_inputs` compare files by
  identity (links and other spellings of a path included) for the tools
  that write files.
"""
from __future__ import annotations

import ast
import contextlib
import copy
import difflib
import errno
import fcntl
import logging
import os
import os.path as osp
import socket
import time
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

from mmengine.config import Config, ConfigDict
from mmengine.logging import print_log

__all__ = [
    'SCOPES', 'config_scope', 'load_config', 'enable_amp', 'set_resume',
    'enable_auto_scale_lr', 'setup_tta', 'setup_visualization',
    'setup_out', 'add_out_dumper', 'build_runner', 'has_amp_wrapper',
    'WorkDirError', 'existing_checkpoints', 'guard_work_dir',
    'checkpoint_dir', 'WorkDirLock', 'claim_work_dir', 'ConfigOptionError',
    'check_cfg_options',
    'read_config', 'protect_config_dump', 'same_file',
    'refuse_overwriting_inputs', 'RUNNER_KEYS'
]

#: The default scopes the tools know.
SCOPES = ('mmseg', 'mmdet', 'mmpretrain')


def config_scope(cfg: Config) -> str:
    """The config's ``default_scope``, checked to be one of :data:`SCOPES`.

    Raises:
        ValueError: For a config without a known ``default_scope``.
    """
    scope = cfg.get('default_scope')
    if scope not in SCOPES:
        raise ValueError(
            f'The config has default_scope={scope!r}; the tools handle '
            f'{", ".join(SCOPES)} (set by the host base configs, e.g. '
            "'mmseg::_base_/default_runtime.py').")
    return scope


#: Top-level keys that mmengine's Runner (``Runner.from_cfg``) and these
#: tools read from a config, whether or not the config sets them: a
#: ``--cfg-options`` key outside these and the config's own keys has no
#: effect, so it is refused as a typo.
RUNNER_KEYS = frozenset((
    'model', 'work_dir', 'train_dataloader', 'val_dataloader',
    'test_dataloader', 'train_cfg', 'val_cfg', 'test_cfg', 'auto_scale_lr',
    'optim_wrapper', 'param_scheduler', 'val_evaluator', 'test_evaluator',
    'default_hooks', 'custom_hooks', 'data_preprocessor', 'load_from',
    'resume', 'launcher', 'env_cfg', 'log_processor', 'log_level',
    'visualizer', 'default_scope', 'randomness', 'experiment_name',
    'model_wrapper_cfg', 'compile', 'strategy', 'runner_type',
    'custom_imports', 'tta_model', 'tta_pipeline'))


class ConfigOptionError(ValueError):
    """A ``--cfg-options`` key that the config and the Runner do not know."""


def check_cfg_options(cfg: Config, cfg_options: Mapping[str, Any]) -> None:
    """Refuse ``--cfg-options`` whose top-level key is unknown.

    ``Config.merge_from_dict`` adds any key it is given, so a typo such as
    ``trian_cfg.max_epochs=5`` would be added next to ``train_cfg`` and
    silently ignored. A top-level key is known when the config has it or
    when it is one of :data:`RUNNER_KEYS`.

    Args:
        cfg (Config): The config, before the options are merged.
        cfg_options (Mapping[str, Any]): The options, ``{'a.b.c': value}``.

    Raises:
        ConfigOptionError: For the first unknown key, naming the closest
            known one (``difflib``) and the config's top-level keys.
    """
    known = set(cfg.keys()) | RUNNER_KEYS
    for key in cfg_options:
        top = str(key).split('.', 1)[0]
        if top in known:
            continue
        close = difflib.get_close_matches(top, sorted(known), n=1)
        hint = (f"Did you mean '{close[0]}' ({key.replace(top, close[0], 1)}"
                '=...)? ' if close else '')
        raise ConfigOptionError(
            f'--cfg-options {key}: {top!r} is not a top-level key of the '
            'config nor one that the Runner reads, so the option would be '
            f'ignored. {hint}The config\'s top-level keys: '
            f'{", ".join(sorted(cfg.keys()))}.')


def _base_files(tree: ast.Module, path: str) -> list[str]:
    """The local ``_base_`` files of a parsed Python config (package
    configs, ``mmseg::...``, are not followed)."""
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == '_base_'):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                return []
            names = [value] if isinstance(value, str) else list(value)
            return [
                osp.join(osp.dirname(path), name) for name in names
                if isinstance(name, str) and '::' not in name
                and name.endswith('.py')
            ]
    return []


def _find_syntax_error(path: str, seen: set) -> SyntaxError | None:
    """The syntax error in a Python config or its local bases, with the
    file name that mmengine's parsing leaves as ``<unknown>``."""
    real = osp.realpath(path)
    if real in seen or not osp.isfile(path):
        return None
    seen.add(real)
    with open(path, encoding='utf-8') as f:
        source = f.read()
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as err:
        return err
    for base in _base_files(tree, path):
        err = _find_syntax_error(base, seen)
        if err is not None:
            return err
    return None


def read_config(path: str) -> Config:
    """``Config.fromfile``, with syntax errors reported at their file and
    line.

    Args:
        path (str): The config file.

    Returns:
        Config: The config.

    Raises:
        SyntaxError: The config or one of its local ``_base_`` files is not
            valid Python; the message names the file and the line and
            shows the line, as Python would.
    """
    try:
        return Config.fromfile(path)
    except SyntaxError as err:
        found = _find_syntax_error(path, set()) if path.endswith(
            '.py') else None
        if found is None:
            raise SyntaxError(f'{path}: {err}') from None
        text = (found.text or '').rstrip('\n')
        caret = (f'\n    {text}\n    {" " * max((found.offset or 1) - 1, 0)}^'
                 if text else '')
        raise SyntaxError(
            f'Syntax error in the config {found.filename}, line '
            f'{found.lineno}: {found.msg}{caret}\nFix that line: the config '
            'is read only once it is valid Python.') from None


def load_config(config: str,
                cfg_options: dict | None = None,
                work_dir: str | None = None,
                launcher: str = 'none') -> Config:
    """Load a config, apply ``--cfg-options`` and choose the work dir.

    The work dir is, in order: ``work_dir``, the config's own, or
    ``./work_dirs/<config name>``, as the upstream tools choose it.

    Args:
        config (str): The config file.
        cfg_options (dict, optional): ``--cfg-options``. Defaults to None.
        work_dir (str, optional): ``--work-dir``. Defaults to None.
        launcher (str): ``--launcher``. Defaults to ``'none'``.

    Returns:
        Config: The config, ready for the tools.

    Raises:
        SyntaxError: See :func:`read_config`.
        ConfigOptionError: See :func:`check_cfg_options`.
        ValueError: The config's ``default_scope`` is not one of
            :data:`SCOPES`.
    """
    cfg = read_config(config)
    cfg.launcher = launcher
    if cfg_options:
        check_cfg_options(cfg, cfg_options)
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(config))[0])
    config_scope(cfg)
    return cfg


def has_amp_wrapper(cfg: Config) -> bool:
    """Whether ``cfg.optim_wrapper`` is an ``AmpOptimWrapper``."""
    wrapper = cfg.get('optim_wrapper') or {}
    return str(wrapper.get('type', '')).endswith('AmpOptimWrapper')


def enable_amp(cfg: Config) -> None:
    """Train with ``AmpOptimWrapper`` and a dynamic loss scale (``--amp``).

    Raises:
        ValueError: If the config's wrapper is neither ``OptimWrapper`` nor
            ``AmpOptimWrapper``.
    """
    wrapper = cfg.optim_wrapper
    if has_amp_wrapper(cfg):
        print_log('AMP training is already enabled in the config.',
                  logger='current', level=logging.WARNING)
        return
    if str(wrapper.get('type', 'OptimWrapper')).rsplit(
            '.', 1)[-1] != 'OptimWrapper':
        raise ValueError('--amp works with an OptimWrapper config, got '
                         f'{wrapper.get("type")!r}.')
    wrapper.type = 'AmpOptimWrapper'
    wrapper.loss_scale = 'dynamic'


def set_resume(cfg: Config, resume: str | None) -> None:
    """``--resume``: ``None`` (no), ``'auto'`` (the latest checkpoint of
    the work dir) or a checkpoint path."""
    if resume is None:
        cfg.resume = False
    elif resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    else:
        cfg.resume = True
        cfg.load_from = resume


class WorkDirError(RuntimeError):
    """Training into this work dir would lose a user's checkpoints, or
    ``--resume`` has nothing sound to resume from."""


def existing_checkpoints(work_dir: str) -> list[str]:
    """The checkpoints a new run in ``work_dir`` would replace: the
    ``*.pth`` files in it and ``last_checkpoint`` (file names, sorted)."""
    if not osp.isdir(work_dir):
        return []
    return sorted(
        name for name in os.listdir(work_dir)
        if osp.isfile(osp.join(work_dir, name)) and (
            name.endswith('.pth') or name == 'last_checkpoint'))


def same_file(a: str, b: str) -> bool:
    """Whether two paths name one file: by identity (``os.path.samefile``:
    hard and symbolic links, ``..``, a linked directory) when both exist,
    else by their real paths.

    Args:
        a (str): A path.
        b (str): Another path.
    """
    try:
        return osp.samefile(a, b)
    except OSError:
        return osp.realpath(a) == osp.realpath(b)


def refuse_overwriting_inputs(output: str, inputs: Mapping[str, Any],
                              option: str = 'the output') -> None:
    """Refuse to write ``output`` over one of a tool's input files.

    Args:
        output (str): The file the tool is about to write.
        inputs (Mapping[str, Any]): The inputs by what they are (e.g.
            ``{'--checkpoint': path}``); None values and URLs are skipped.
        option (str): How the command line names ``output``. Defaults to
            ``'the output'``.

    Raises:
        ValueError: ``output`` is one of the inputs, whatever the path
            spelling (a link, ``..``).
    """
    for what, path in inputs.items():
        if path is None or '://' in str(path):
            continue
        if same_file(str(output), str(path)):
            raise ValueError(
                f'{option} {output} is the same file as {what} {path}: '
                'writing it would replace that input. Give another path '
                f'for {option}.')


def checkpoint_dir(cfg: Config) -> str | None:
    """Where mmengine's ``CheckpointHook`` of ``cfg`` saves checkpoints.

    The work dir, unless ``default_hooks.checkpoint.out_dir`` is set: then
    ``<out_dir>/<basename of the work dir>``, as the hook joins them.

    Args:
        cfg (Config): The config, with its ``work_dir`` chosen.

    Returns:
        str | None: The directory; None when ``out_dir`` is a remote
        location (a URL), which cannot be looked into here.
    """
    hook = (cfg.get('default_hooks') or {}).get('checkpoint') or {}
    out_dir = hook.get('out_dir')
    work_dir = osp.abspath(cfg.work_dir)
    if not out_dir:
        return work_dir
    out_dir = str(out_dir)
    if '://' in out_dir:
        return None
    if out_dir == work_dir:
        return work_dir
    return osp.join(out_dir, osp.basename(work_dir.rstrip(osp.sep)))


def _read_last_checkpoint(work_dir: str) -> str | None:
    path = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(path):
        return None
    with open(path, encoding='utf-8', errors='replace') as f:
        return f.read().strip()


def _check_auto_resume(work_dir: str, pth_paths: list[str]) -> None:
    """``--resume`` without a path: mmengine resumes from the checkpoint
    named in ``last_checkpoint``; check there is one to resume from."""
    listing = (f'It holds {", ".join(osp.basename(p) for p in pth_paths)}: '
               'give the one to resume from with --resume '
               f'{pth_paths[-1]}.' if pth_paths else
               'It holds no checkpoint (*.pth).')
    last = _read_last_checkpoint(work_dir)
    if last is None:
        if pth_paths:
            raise WorkDirError(
                f'--resume: {work_dir} has no last_checkpoint file naming '
                'the checkpoint to resume from, and resuming would start a '
                f'new run over its checkpoints. {listing}')
        return  # nothing to resume: a new run, as mmengine does
    if not last:
        raise WorkDirError(
            f'--resume: {osp.join(work_dir, "last_checkpoint")} is empty, '
            'so it names no checkpoint to resume from (a run stopped while '
            f'writing it?). {listing} Or start a new run: in another '
            '--work-dir, or here with --overwrite (deletes these '
            'checkpoints).')
    if '://' not in last and not osp.isfile(osp.expanduser(last)):
        raise WorkDirError(
            f'--resume: {osp.join(work_dir, "last_checkpoint")} names '
            f'{last}, which does not exist (moved or deleted?). {listing}')


def _found_checkpoints(work_dir: str,
                       ckpt_dir: str | None) -> dict[str, str]:
    """The checkpoints of an earlier run, ``{shown name: path}``: those of
    the work dir by file name, those of another checkpoint dir by path."""
    found = {
        name: osp.join(work_dir, name)
        for name in existing_checkpoints(work_dir)
    }
    if ckpt_dir is not None and not (osp.isdir(ckpt_dir) and osp.isdir(
            work_dir) and same_file(ckpt_dir, work_dir)):
        for name in existing_checkpoints(ckpt_dir):
            if name.endswith('.pth'):
                path = osp.join(ckpt_dir, name)
                found[path] = path
    return found


def _check_resume_path(resume: str, work_dir: str,
                       found: dict[str, str]) -> None:
    """``--resume PATH`` continues the run that saved ``PATH``. The work
    dir may hold only that run's checkpoints: ``PATH`` must be one of them
    when there are any."""
    pths = {n: p for n, p in found.items() if n.endswith('.pth')}
    if not pths or any(
            '://' not in resume and same_file(resume, p)
            for p in pths.values()):
        return
    raise WorkDirError(
        f'--resume {resume}: that checkpoint is not one of {work_dir}, '
        f'which holds the checkpoints of another run: {", ".join(pths)}. '
        'The resumed run would save its checkpoints and last_checkpoint '
        'over them. Choose one:\n'
        '  --work-dir DIR          continue the run of '
        f'{osp.basename(resume)} in a new or empty directory (or in the one '
        'it was saved in);\n'
        f'  --resume {next(iter(pths.values()))}  continue the run of '
        f'{work_dir} instead (or --resume alone, from its last '
        'checkpoint).')


def guard_work_dir(work_dir: str,
                   resume: str | None,
                   overwrite: bool = False,
                   delete: bool = True,
                   ckpt_dir: str | None = None,
                   load_from: str | None = None) -> list[str]:
    """Keep ``tools/train.py`` from replacing an earlier run's checkpoints.

    Checkpoints are looked for in the work dir (``*.pth`` and
    ``last_checkpoint``) and in ``ckpt_dir``, where ``CheckpointHook`` saves
    when its ``out_dir`` is set (see :func:`checkpoint_dir`).

    Args:
        work_dir (str): The run's work dir.
        resume (str, optional): ``--resume``: None, ``'auto'`` or a path.
        overwrite (bool): ``--overwrite``: delete the checkpoints found and
            start again. Defaults to False.
        delete (bool): Whether this process deletes them (only one process
            of a distributed run does). Defaults to True.
        ckpt_dir (str, optional): Where the run saves its checkpoints, if
            not in the work dir. Defaults to None.
        load_from (str, optional): The config's ``load_from``, which
            ``--overwrite`` must not delete. Defaults to None.

    Returns:
        list[str]: The files deleted (``--overwrite``), else empty: names
        in the work dir, paths elsewhere.

    Raises:
        WorkDirError: The run would replace checkpoints of another run:
            the work dir or ``ckpt_dir`` holds checkpoints and neither
            ``resume`` nor ``overwrite`` is given; ``resume`` is a path
            that is not one of them; ``overwrite`` would delete
            ``load_from``. Also when ``resume`` and ``overwrite`` are both
            given, or ``resume='auto'`` has no sound checkpoint to resume
            from. The message lists the files and the ways forward.
    """
    found = _found_checkpoints(work_dir, ckpt_dir)
    if overwrite and resume is not None:
        raise WorkDirError(
            '--resume continues the run in the work dir and --overwrite '
            'deletes its checkpoints: give one of them.')
    if resume == 'auto':
        _check_auto_resume(
            work_dir, [p for n, p in found.items() if n.endswith('.pth')])
    elif resume is not None:
        _check_resume_path(resume, work_dir, found)
    if resume is not None or not found:
        return []
    if not overwrite:
        last = _read_last_checkpoint(work_dir)
        named = (f' (last_checkpoint names {last or "nothing: it is empty"})'
                 if last is not None else '')
        where = f'The work dir {work_dir}'
        if any(osp.sep in name for name in found):
            where += (f' with its checkpoint dir {ckpt_dir} (default_hooks.'
                      'checkpoint.out_dir)')
        raise WorkDirError(
            f'{where} already holds checkpoints of an earlier '
            f'run: {", ".join(found)}{named}. Training would replace them. '
            'Choose one:\n'
            '  --resume [CKPT]   continue that run (from its last checkpoint, '
            'or from CKPT);\n'
            '  --work-dir DIR    start the new run in another directory;\n'
            '  --overwrite       delete these checkpoints and start again '
            'here.')
    if load_from and '://' not in str(load_from):
        kept = [n for n, p in found.items() if same_file(str(load_from), p)]
        if kept:
            raise WorkDirError(
                f'--overwrite would delete {kept[0]}, the checkpoint that '
                f'load_from={load_from} starts the new run from, and the run '
                'would save its own checkpoints in its place. Copy it out of '
                f'{osp.dirname(found[kept[0]])} and point load_from at the '
                'copy (--cfg-options load_from=COPY), or train in another '
                '--work-dir.')
    if delete:
        for path in found.values():
            try:
                os.remove(path)
            except FileNotFoundError:
                pass
        print_log(
            f'--overwrite: deleted the earlier checkpoints of {work_dir}: '
            f'{", ".join(found)}.',
            logger='current',
            level=logging.WARNING)
    return list(found)


class WorkDirLock:
    """One training run at a time in a work dir.

    An exclusive ``fcntl.flock`` on the file ``.train.lock`` in the work
    dir (made if missing). The kernel drops the lock when the process ends,
    however it ends (an exception, ``kill -9``, a crash), so a stale lock
    never blocks the next run. The file itself stays, holding the pid and
    host of the last run that locked it.

    Args:
        work_dir (str): The work dir.

    Example:
        >>> with WorkDirLock('work_dirs/run'):
        ...     runner.train()
    """

    NAME = '.train.lock'

    def __init__(self, work_dir: str) -> None:
        self.work_dir = work_dir
        self.path = osp.join(work_dir, self.NAME)
        self._fd: int | None = None

    @property
    def locked(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock, or refuse at once.

        Raises:
            WorkDirError: Another process holds it; the message names its
                pid and host, and the fix.
        """
        if self._fd is not None:
            return
        os.makedirs(self.work_dir, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = os.read(fd, 200).decode('utf-8', 'replace').strip()
            os.close(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN,
                                 errno.EACCES):
                raise
            raise WorkDirError(
                f'Another run is training in {self.work_dir} '
                f'({holder or "its pid is not written yet"}; lock file '
                f'{self.path}): two runs in one work dir would save their '
                'checkpoints over each other and log into one folder. Wait '
                'for it to end, or give this run another --work-dir.'
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f'pid {os.getpid()} on {socket.gethostname()}, since '
                 f'{time.strftime("%Y-%m-%d %H:%M:%S")}\n'.encode())
        self._fd = fd

    def release(self) -> None:
        """Let the next run in (also done by the end of the process)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> WorkDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


@contextlib.contextmanager
def claim_work_dir(cfg: Config, resume: bool | str, overwrite: bool,
                   main_process: bool = True) -> Iterator[None]:
    """Lock the work dir (and the checkpoint dir of
    ``default_hooks.checkpoint.out_dir``) and check it, for one training
    run; the locks are held until the ``with`` block ends.

    The main process of a distributed run locks and deletes
    (``--overwrite``); every process checks (:func:`guard_work_dir`).

    Raises:
        WorkDirError: Another run holds a lock, or the work dir holds what
            this run must not replace.
    """
    ckpt_dir = checkpoint_dir(cfg)
    # One lock per directory, however its path is spelled: a second flock
    # on the same file would refuse this very run.
    dirs = sorted({osp.realpath(p) for p in (cfg.work_dir, ckpt_dir) if p})
    with contextlib.ExitStack() as stack:
        if main_process:
            for work_dir in dirs:
                stack.enter_context(WorkDirLock(work_dir))
        guard_work_dir(
            cfg.work_dir, resume, overwrite, delete=main_process,
            ckpt_dir=ckpt_dir,
            load_from=None if resume else cfg.get('load_from'))
        yield


def enable_auto_scale_lr(cfg: Config) -> None:
    """``--auto-scale-lr``: scale the lr by the real total batch size.

    Raises:
        ValueError: If the config has no ``auto_scale_lr.base_batch_size``.
    """
    if 'base_batch_size' not in (cfg.get('auto_scale_lr') or {}):
        raise ValueError(
            '--auto-scale-lr needs auto_scale_lr=dict(base_batch_size=N) in '
            'the config.')
    cfg.auto_scale_lr.enable = True


# --------------------------------------------------------------------------
# Test-time options, per codebase.
# --------------------------------------------------------------------------
def _flip_tta_pipeline(test_pipeline: list, pack: dict) -> list:
    """The test pipeline with its packing step replaced by a horizontal
    flip TTA (original and flipped) followed by ``pack``."""
    pipeline = copy.deepcopy(test_pipeline)
    pipeline[-1] = dict(
        type='TestTimeAug',
        transforms=[[
            dict(type='RandomFlip', prob=1.),
            dict(type='RandomFlip', prob=0.)
        ], [pack]])
    return pipeline


def _innermost_dataset(dataset_cfg: ConfigDict) -> ConfigDict:
    while 'dataset' in dataset_cfg:
        dataset_cfg = dataset_cfg['dataset']
    return dataset_cfg


def _has_mask_head(model_cfg) -> bool:
    """Whether a detector config predicts instance masks."""
    if isinstance(model_cfg, dict):
        if model_cfg.get('mask_head') is not None:
            return True
        return any(_has_mask_head(v) for v in model_cfg.values())
    if isinstance(model_cfg, (list, tuple)):
        return any(_has_mask_head(v) for v in model_cfg)
    return False


def setup_tta(cfg: Config) -> None:
    """``--tta``: wrap the model in the config's ``tta_model`` and test with
    its ``tta_pipeline``.

    mmseg configs must define both (the multi-scale ratios are part of the
    recipe). mmdet and mmpretrain configs without them get the defaults of
    their codebases' tools: a horizontal-flip TTA merged by
    ``DetTTAModel`` (NMS, IoU 0.5, 100 boxes) or ``AverageClsScoreTTA``.

    Raises:
        ValueError: For an mmseg config without ``tta_model`` or
            ``tta_pipeline``, and for an instance-segmentation detector
            under ``DetTTAModel``, which merges boxes only.
    """
    scope = config_scope(cfg)
    if scope == 'mmseg':
        missing = [k for k in ('tta_model', 'tta_pipeline') if k not in cfg]
        if missing:
            raise ValueError(f'--tta needs {" and ".join(missing)} in the '
                             'config (mmseg has no default multi-scale TTA).')
    elif scope == 'mmdet':
        tta_type = str(cfg.get('tta_model', {}).get('type', 'DetTTAModel'))
        if (tta_type.rsplit('.', 1)[-1] == 'DetTTAModel'
                and _has_mask_head(cfg.model)):
            raise ValueError(
                f'--tta: mmdet\'s DetTTAModel merges boxes only and cannot '
                f'merge the masks of this {cfg.model.get("type")} (mmdet '
                '3.x stops with "TTA of instance segmentation does not '
                'support now"). The published COCO box and mask AP are '
                'single-scale results: test without --tta.')
        if 'tta_model' not in cfg:
            warnings.warn('No tta_model in the config: using DetTTAModel '
                          '(NMS IoU 0.5, 100 boxes per image).')
            cfg.tta_model = dict(
                type='DetTTAModel',
                tta_cfg=dict(
                    nms=dict(type='nms', iou_threshold=0.5),
                    max_per_img=100))
        if 'tta_pipeline' not in cfg:
            warnings.warn('No tta_pipeline in the config: using a '
                          'horizontal-flip TTA.')
            dataset = _innermost_dataset(cfg.test_dataloader.dataset)
            if 'batch_shapes_cfg' in dataset:
                dataset.batch_shapes_cfg = None
            pack = dict(
                type='PackDetInputs',
                meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                           'scale_factor', 'flip', 'flip_direction'))
            cfg.tta_pipeline = _flip_tta_pipeline(dataset.pipeline, pack)
    else:  # mmpretrain
        if 'tta_model' not in cfg:
            cfg.tta_model = dict(type='mmpretrain.AverageClsScoreTTA')
        if 'tta_pipeline' not in cfg:
            pipeline = cfg.test_dataloader.dataset.pipeline
            cfg.tta_pipeline = _flip_tta_pipeline(pipeline, pipeline[-1])
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline


def setup_visualization(cfg: Config,
                        show: bool = False,
                        show_dir: str | None = None,
                        wait_time: float = 2.) -> None:
    """``--show`` / ``--show-dir``: switch on the codebase's
    ``VisualizationHook``.

    Raises:
        RuntimeError: If the config has no ``default_hooks.visualization``.
    """
    hooks = cfg.get('default_hooks') or {}
    if 'visualization' not in hooks:
        raise RuntimeError(
            '--show and --show-dir need default_hooks.visualization in the '
            "config, e.g. visualization=dict(type='"
            "SegVisualizationHook').")
    hook = hooks['visualization']
    scope = config_scope(cfg)
    if scope == 'mmpretrain':
        hook.enable = True
        hook.show = show
        hook.wait_time = wait_time
        hook.out_dir = show_dir
        return
    hook.draw = True
    if show:
        hook.show = True
        hook.wait_time = wait_time
    if show_dir:
        if scope == 'mmseg':
            cfg.visualizer.save_dir = show_dir
        else:
            hook.test_out_dir = show_dir


def setup_out(cfg: Config, out: str | None) -> None:
    """``--out`` for mmseg: ``IoUMetric`` writes the predicted masks (PNG)
    into the directory ``out``. The other codebases dump a pickle, see
    :func:`add_out_dumper`."""
    if out is None or config_scope(cfg) != 'mmseg':
        return
    evaluator = cfg.test_evaluator
    for metric in evaluator if isinstance(evaluator, list) else [evaluator]:
        metric['output_dir'] = out
        metric['keep_results'] = True


def add_out_dumper(runner: Any, cfg: Config, out: str | None) -> None:
    """``--out`` for mmdet and mmpretrain: dump the predictions to the
    pickle ``out`` (mmdet: ``DumpDetResults``, masks as RLE; mmpretrain:
    ``DumpResults``).

    Raises:
        ValueError: If ``out`` does not end in ``.pkl`` or ``.pickle``.
    """
    scope = config_scope(cfg)
    if out is None or scope == 'mmseg':
        return
    if not out.endswith(('.pkl', '.pickle')):
        raise ValueError(f'--out must be a .pkl or .pickle file for {scope} '
                         f'configs, got {out!r}.')
    if scope == 'mmdet':
        from mmdet.evaluation import DumpDetResults
        dumper = DumpDetResults(out_file_path=out)
    else:
        from mmengine.evaluator import DumpResults
        dumper = DumpResults(out_file_path=out)
    runner.test_evaluator.metrics.append(dumper)


def protect_config_dump(cfg: Config) -> str | None:
    """Keep mmengine's config dump from replacing a file.

    The Runner writes the config to ``<work_dir>/<config file name>``
    (``Runner.dump_config``), whatever is there: the user's own config when
    it lies in the work dir, or the dump of an earlier run (say, the
    training config, replaced by that of a test). When that file exists,
    the dump goes to ``<config stem>.<time>.py`` instead (a name not taken),
    by renaming the config's ``filename``; ``experiment_name`` keeps the
    config's stem, so the log names do not change.

    Args:
        cfg (Config): The config, with its ``work_dir`` chosen; changed in
            place.

    Returns:
        str | None: The path the dump goes to when it was moved, else None.
    """
    if cfg.filename is None:
        return None  # mmengine dumps to <timestamp>.py, a new name
    name = osp.basename(cfg.filename)
    target = osp.join(cfg.work_dir, name)
    if not osp.lexists(target):
        return None
    stem, ext = osp.splitext(name)
    stamp = time.strftime('%Y%m%d_%H%M%S')
    candidate, n = f'{stem}.{stamp}{ext}', 1
    while osp.lexists(osp.join(cfg.work_dir, candidate)):
        candidate, n = f'{stem}.{stamp}_{n}{ext}', n + 1
    if cfg.get('experiment_name') is None:
        cfg.experiment_name = stem
    # Config keeps its path outside its dict; only the dump and the default
    # experiment name (set above) read it.
    object.__setattr__(cfg, '_filename',
                       osp.join(osp.dirname(cfg.filename), candidate))
    dump = osp.join(cfg.work_dir, candidate)
    print_log(f'{target} exists: the config is dumped to {dump} instead.',
              logger='current', level=logging.INFO)
    return dump


def build_runner(cfg: Config) -> Any:
    """The config's Runner: ``RUNNERS.build`` of the config's scope when it
    names a ``runner_type``, mmengine's ``Runner.from_cfg`` otherwise (as
    the upstream tools).

    The config dump of the Runner never replaces a file
    (:func:`protect_config_dump`).
    """
    protect_config_dump(cfg)
    if 'runner_type' in cfg:
        from mmengine.registry import RUNNERS, DefaultScope
        with DefaultScope.overwrite_default_scope(config_scope(cfg)):
            return RUNNERS.build(cfg)
    from mmengine.runner import Runner
    return Runner.from_cfg(cfg)
