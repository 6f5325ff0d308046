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
Runner) is shared, and so is the guard that keeps ``tools/train.py`` from
replacing the checkpoints of an earlier run (:func:`guard_work_dir`).
"""
from __future__ import annotations

import copy
import logging
import os
import os.path as osp
import warnings
from typing import Any

from mmengine.config import Config, ConfigDict
from mmengine.logging import print_log

__all__ = [
    'SCOPES', 'config_scope', 'load_config', 'enable_amp', 'set_resume',
    'enable_auto_scale_lr', 'setup_tta', 'setup_visualization',
    'setup_out', 'add_out_dumper', 'build_runner', 'has_amp_wrapper',
    'WorkDirError', 'existing_checkpoints', 'guard_work_dir'
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


def load_config(config: str,
                cfg_options: dict | None = None,
                work_dir: str | None = None,
                launcher: str = 'none') -> Config:
    """Load a config, apply ``--cfg-options`` and choose the work dir.

    The work dir is, in order: ``work_dir``, the config's own, or
    ``./work_dirs/<config name>``, as the upstream tools choose it.
    """
    cfg = Config.fromfile(config)
    cfg.launcher = launcher
    if cfg_options:
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


def _read_last_checkpoint(work_dir: str) -> str | None:
    path = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(path):
        return None
    with open(path, encoding='utf-8', errors='replace') as f:
        return f.read().strip()


def _check_auto_resume(work_dir: str, found: list[str]) -> None:
    """``--resume`` without a path: mmengine resumes from the checkpoint
    named in ``last_checkpoint``; check there is one to resume from."""
    pths = [n for n in found if n.endswith('.pth')]
    listing = (f'It holds {", ".join(pths)}: give the one to resume from '
               f'with --resume {osp.join(work_dir, pths[-1])}.'
               if pths else 'It holds no checkpoint (*.pth).')
    last = _read_last_checkpoint(work_dir)
    if last is None:
        if pths:
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


def guard_work_dir(work_dir: str,
                   resume: str | None,
                   overwrite: bool = False,
                   delete: bool = True) -> list[str]:
    """Keep ``tools/train.py`` from replacing an earlier run's checkpoints.

    Args:
        work_dir (str): The run's work dir.
        resume (str, optional): ``--resume``: None, ``'auto'`` or a path.
        overwrite (bool): ``--overwrite``: delete the checkpoints found and
            start again. Defaults to False.
        delete (bool): Whether this process deletes them (only one process
            of a distributed run does). Defaults to True.

    Returns:
        list[str]: The files deleted (``--overwrite``), else empty.

    Raises:
        WorkDirError: ``work_dir`` holds checkpoints or ``last_checkpoint``
            and neither ``resume`` nor ``overwrite`` is given (the message
            lists them and the three ways forward); both are given; or
            ``resume='auto'`` has no sound checkpoint to resume from.
    """
    found = existing_checkpoints(work_dir)
    if overwrite and resume is not None:
        raise WorkDirError(
            '--resume continues the run in the work dir and --overwrite '
            'deletes its checkpoints: give one of them.')
    if resume == 'auto':
        _check_auto_resume(work_dir, found)
    if resume is not None or not found:
        return []
    if not overwrite:
        last = _read_last_checkpoint(work_dir)
        named = (f' (last_checkpoint names {last or "nothing: it is empty"})'
                 if last is not None else '')
        raise WorkDirError(
            f'The work dir {work_dir} already holds checkpoints of an earlier '
            f'run: {", ".join(found)}{named}. Training would replace them. '
            'Choose one:\n'
            '  --resume [CKPT]   continue that run (from its last checkpoint, '
            'or from CKPT);\n'
            '  --work-dir DIR    start the new run in another directory;\n'
            '  --overwrite       delete these checkpoints and start again '
            'here.')
    if delete:
        for name in found:
            try:
                os.remove(osp.join(work_dir, name))
            except FileNotFoundError:
                pass
        print_log(
            f'--overwrite: deleted the earlier checkpoints of {work_dir}: '
            f'{", ".join(found)}.',
            logger='current',
            level=logging.WARNING)
    return found


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


def build_runner(cfg: Config) -> Any:
    """The config's Runner: ``RUNNERS.build`` of the config's scope when it
    names a ``runner_type``, mmengine's ``Runner.from_cfg`` otherwise (as
    the upstream tools)."""
    if 'runner_type' in cfg:
        from mmengine.registry import RUNNERS, DefaultScope
        with DefaultScope.overwrite_default_scope(config_scope(cfg)):
            return RUNNERS.build(cfg)
    from mmengine.runner import Runner
    return Runner.from_cfg(cfg)
