"""Shared pieces of the end-to-end tests: synthetic datasets, the small
sizes passed with ``--cfg-options``, and a runner for the tools."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / 'tools'
CONFIGS = REPO / 'configs'

#: Runs stock tools one after the other in one process.
STOCK_TOOL_BATCH = Path(__file__).with_name('run_stock_tools.py')

SEG_CONFIG = CONFIGS / 'upernet_fcaformer_l2_ade20k.py'
MASK_RCNN_CONFIG = CONFIGS / 'mask_rcnn_fcaformer_l2_fpn_3x_coco.py'
CASCADE_CONFIG = CONFIGS / 'cascade_mask_rcnn_fcaformer_l2_fpn_3x_coco.py'
CLS_CONFIG = CONFIGS / 'fcaformer_l1_in1k.py'

#: Only catches a hung tool run: many times what the small runs here take
#: on a busy machine (the tests never depend on the machine's speed).
RUN_TIMEOUT = 1800


def tool_env() -> dict:
    """The environment of the tool subprocesses: CPU only, the repo on the
    path, one thread per process.

    One thread: the runs here are small, the distributed ones start two
    processes, and the suite shares the machine with other work; torch's
    default pool (a thread per core) then spins against the other
    processes and makes a tiny model's iteration ten times slower."""
    env = dict(os.environ)
    env['CUDA_VISIBLE_DEVICES'] = ''
    env['OMP_NUM_THREADS'] = '1'
    env['MKL_NUM_THREADS'] = '1'
    env['PYTHONPATH'] = os.pathsep.join(
        p for p in (str(REPO), env.get('PYTHONPATH')) if p)
    env.setdefault('PYTHONWARNINGS', 'ignore')
    return env


def run(args: list, cwd: Path, check: bool = True,
        env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a command (``args[0]`` a script run with this Python, or
    ``bash``), return the completed process; on failure show its output."""
    cmd = [str(a) for a in args]
    if cmd[0].endswith('.py'):
        cmd = [sys.executable] + cmd
    proc = subprocess.run(
        cmd, cwd=cwd, env=env or tool_env(), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, timeout=RUN_TIMEOUT)
    if check and proc.returncode != 0:
        pytest.fail(f'{" ".join(cmd)} exited {proc.returncode}:\n'
                    f'{proc.stdout[-8000:]}')
    return proc


def free_port() -> int:
    """A TCP port that is free now (for torchrun's rendezvous)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def options(**kv) -> list:
    """``--cfg-options`` arguments from keyword pairs (``__`` -> ``.``)."""
    return ['--cfg-options'] + [
        f'{k.replace("__", ".")}={v}' for k, v in kv.items()
    ]


# --------------------------------------------------------------------------
# Small settings per config: real pipelines and evaluators, tiny sizes.
# --------------------------------------------------------------------------
#: The widths of the tiny FcaFormer of :func:`tiny_backbone`, also its
#: output widths (the config's heads and necks are set to take them).
TINY_WIDTHS = (16, 32, 48, 64)
#: Its ``arch``: two ConvNeXt stages of one block; FCA stages of two blocks
#: (the second attends to the first's cross tokens) and of one.
TINY_ARCH = dict(embed_dims=TINY_WIDTHS, depths=(1, 1, 2, 1),
                 num_heads=(2, 2))


def _tuple(values, brackets: str = '()') -> str:
    return brackets[0] + ','.join(map(str, values)) + brackets[1]


def tiny_backbone(out_channels: bool = True) -> dict:
    """FcaFormer at small widths: every kind of stage and block is there
    (two ConvNeXt stages; FCA stages with and without cross tokens) at a
    small cost, for the runs that test the tools, the data and the
    evaluators rather than the architecture."""
    opts = {'model.backbone.arch._delete_': True}
    for key, values in TINY_ARCH.items():
        opts[f'model.backbone.arch.{key}'] = _tuple(values)
    if out_channels:
        opts['model.backbone.out_channels'] = _tuple(TINY_WIDTHS)
    return opts


def tiny_seg_model() -> dict:
    """UperNet with the tiny backbone and 16-channel heads."""
    return {
        **tiny_backbone(),
        'model.decode_head.in_channels': _tuple(TINY_WIDTHS, '[]'),
        'model.decode_head.channels': 16,
        'model.auxiliary_head.in_channels': TINY_WIDTHS[2],
        'model.auxiliary_head.channels': 16,
    }


def tiny_det_model(cascade: bool = False, retinanet: bool = False) -> dict:
    """The detectors with the tiny backbone and 16-channel necks and heads
    (RetinaNet's backbone gives its last three stages)."""
    widths = TINY_WIDTHS[1:] if retinanet else TINY_WIDTHS
    opts = {
        **tiny_backbone(),
        'model.neck.in_channels': _tuple(widths, '[]'),
        'model.neck.out_channels': 16,
    }
    if retinanet:
        opts.update({
            'model.bbox_head.in_channels': 16,
            'model.bbox_head.feat_channels': 16,
        })
        return opts
    opts.update({
        'model.rpn_head.in_channels': 16,
        'model.rpn_head.feat_channels': 16,
        'model.roi_head.bbox_roi_extractor.out_channels': 16,
        'model.roi_head.mask_roi_extractor.out_channels': 16,
        'model.roi_head.mask_head.in_channels': 16,
        'model.roi_head.mask_head.conv_out_channels': 16,
    })
    heads = [f'model.roi_head.bbox_head.{i}.' for i in range(3)] if (
        cascade) else ['model.roi_head.bbox_head.']
    for head in heads:
        opts[head + 'in_channels'] = 16
        opts[head + 'fc_out_channels'] = 32
        if cascade:
            opts[head + 'conv_out_channels'] = 16
    return opts


def seg_options(root: Path, max_iters: int = 2, tiny: bool = True) -> dict:
    """UperNet on the synthetic ADE20K: 64x64 crops, batch 2 (the
    pooling branch of the PPM has BatchNorm on 1x1 maps, which needs two),
    ``max_iters`` iterations, a checkpoint at the end, test on 2 images at
    64x64 without sliding windows; the tiny model unless ``tiny=False``."""
    opts = {
        **(tiny_seg_model() if tiny else {}),
        'model.backbone.init_cfg': None,
        'train_dataloader.dataset.data_root': root,
        'val_dataloader.dataset.data_root': root,
        'test_dataloader.dataset.data_root': root,
        'train_dataloader.dataset.pipeline.2.scale': '(64,64)',
        'train_dataloader.dataset.pipeline.3.crop_size': '(64,64)',
        'model.data_preprocessor.size': '(64,64)',
        'val_dataloader.dataset.pipeline.1.scale': '(64,64)',
        'test_dataloader.dataset.pipeline.1.scale': '(64,64)',
        'test_dataloader.dataset.indices': 2,
        'val_dataloader.dataset.indices': 2,
        'model.test_cfg.mode': 'whole',
        'train_dataloader.batch_size': 2,
        'train_dataloader.num_workers': 0,
        'train_dataloader.persistent_workers': False,
        'val_dataloader.num_workers': 0,
        'val_dataloader.persistent_workers': False,
        'test_dataloader.num_workers': 0,
        'test_dataloader.persistent_workers': False,
        'train_cfg.max_iters': max_iters,
        'train_cfg.val_interval': 1000,
        'default_hooks.checkpoint.interval': 2,
        'default_hooks.logger.interval': 1,
    }
    # The multi-scale TTA at 0.5-1.75 x 64x64 instead of x (2048, 512).
    for i, r in enumerate((0.5, 0.75, 1.0, 1.25, 1.5, 1.75)):
        side = int(64 * r)
        opts[f'tta_pipeline.1.transforms.0.{i}.scale'] = f'({side},{side})'
    return opts


#: The detectors of the package's configs, by the kind of their heads.
DET_KINDS = ('mask_rcnn', 'cascade', 'retinanet')


def det_kind(name: str) -> str:
    """The kind (:data:`DET_KINDS`) of a detector config's name."""
    return next((k for k in ('cascade', 'retinanet') if k in name),
                'mask_rcnn')


def det_options(root: Path, kind: str = 'mask_rcnn',
                tiny: bool = True) -> dict:
    """A detector of ``kind`` on the synthetic COCO: 128x160 images (both
    branches of the multi-scale + crop augmentation of the two-stage
    recipes), batch 1, one epoch, few proposals; the tiny model unless
    ``tiny=False``."""
    ann = root / 'annotations' / 'instances_val2017.json'
    opts = {
        'model.backbone.init_cfg': None,
        'train_dataloader.dataset.data_root': f'{root}/',
        'val_dataloader.dataset.data_root': f'{root}/',
        'test_dataloader.dataset.data_root': f'{root}/',
        'val_evaluator.ann_file': ann,
        'test_evaluator.ann_file': ann,
        'val_dataloader.dataset.pipeline.1.scale': '(160,128)',
        'test_dataloader.dataset.pipeline.1.scale': '(160,128)',
        'train_dataloader.batch_size': 1,
        'train_dataloader.num_workers': 0,
        'train_dataloader.persistent_workers': False,
        'val_dataloader.num_workers': 0,
        'val_dataloader.persistent_workers': False,
        'test_dataloader.num_workers': 0,
        'test_dataloader.persistent_workers': False,
        'train_cfg.max_epochs': 1,
        'train_cfg.val_interval': 1000,
        'default_hooks.logger.interval': 1,
    }
    if tiny:
        opts.update(tiny_det_model(cascade=kind == 'cascade',
                                   retinanet=kind == 'retinanet'))
    if kind == 'retinanet':
        # Its pipeline: Load, LoadAnnotations, Resize, Flip, Pack.
        opts['train_dataloader.dataset.pipeline.2.scale'] = '(160,128)'
        return opts
    opts.update({
        # Both branches of the multi-scale + crop augmentation, at
        # 128x160 instead of 480-800 x 1333.
        'train_dataloader.dataset.pipeline.3.transforms.0.0.scales':
        '"[(160,128),(160,96)]"',
        'train_dataloader.dataset.pipeline.3.transforms.1.0.scales':
        '"[(160,128)]"',
        'train_dataloader.dataset.pipeline.3.transforms.1.1.crop_size':
        '(64,96)',
        'train_dataloader.dataset.pipeline.3.transforms.1.2.scales':
        '"[(160,128),(160,96)]"',
        # Few proposals and RoIs: the heads are the same, only cheaper.
        'model.train_cfg.rpn_proposal.nms_pre': 200,
        'model.train_cfg.rpn_proposal.max_per_img': 100,
        'model.test_cfg.rpn.nms_pre': 200,
        'model.test_cfg.rpn.max_per_img': 50,
        # Untrained heads score every class about 1/81: keep the boxes so
        # that the COCO evaluation has detections to match.
        'model.test_cfg.rcnn.score_thr': 0.0,
        'model.test_cfg.rcnn.max_per_img': 20,
    })
    if kind == 'cascade':
        for i in range(3):
            opts[f'model.train_cfg.rcnn.{i}.sampler.num'] = 64
    else:
        opts['model.train_cfg.rcnn.sampler.num'] = 64
    return opts


def mask_rcnn_options(root: Path, tiny: bool = True) -> dict:
    """Mask R-CNN on the synthetic COCO (see :func:`det_options`)."""
    return det_options(root, 'mask_rcnn', tiny)


def cascade_options(root: Path, tiny: bool = True) -> dict:
    """Cascade Mask R-CNN on the synthetic COCO."""
    return det_options(root, 'cascade', tiny)


def cls_options(root: Path, tiny: bool = True) -> dict:
    """FcaFormer-L1 on the synthetic ImageNet: 64x64 crops, batch 4 (two
    iterations per epoch), validation after the epoch (EMA weights,
    save_best); the tiny backbone unless ``tiny=False``."""
    tiny_opts = {
        **tiny_backbone(out_channels=False),
        'model.head.in_channels': TINY_WIDTHS[-1],
    } if tiny else {}
    return {
        **tiny_opts,
        'train_dataloader.dataset.data_root': root,
        'val_dataloader.dataset.data_root': root,
        'test_dataloader.dataset.data_root': root,
        'train_dataloader.dataset.pipeline.1.scale': 64,
        'val_dataloader.dataset.pipeline.1.scale': 73,
        'val_dataloader.dataset.pipeline.2.crop_size': 64,
        'test_dataloader.dataset.pipeline.1.scale': 73,
        'test_dataloader.dataset.pipeline.2.crop_size': 64,
        'train_dataloader.batch_size': 4,
        'val_dataloader.batch_size': 4,
        'test_dataloader.batch_size': 4,
        'train_dataloader.num_workers': 0,
        'train_dataloader.persistent_workers': False,
        'val_dataloader.num_workers': 0,
        'val_dataloader.persistent_workers': False,
        'test_dataloader.num_workers': 0,
        'test_dataloader.persistent_workers': False,
        'train_cfg.max_epochs': 1,
        'default_hooks.logger.interval': 1,
    }


# --------------------------------------------------------------------------
# The codebases' own tools, several in one process.
# --------------------------------------------------------------------------
#: All a GPU-less machine needs under the stock tools: the configs set
#: nothing AMP-only, so the same optimizer goes into a plain OptimWrapper.
CPU_OPTIONS = {'optim_wrapper.type': 'OptimWrapper'}


def stock_tool(package: str, path: str) -> Path:
    """A tool of an installed codebase's wheel (``<pkg>/.mim/tools``, what
    ``mim run`` and ``mim train`` run)."""
    module = __import__(package)
    tool = Path(module.__file__).parent / '.mim' / 'tools' / path
    assert tool.is_file(), f'{tool} is not in the installed {package} wheel'
    return tool


@dataclass
class ToolRun:
    """One tool run of :func:`run_stock_tools`.

    Attributes:
        status (int | None): Its exit status; None if the batch stopped
            before it.
        output (str): What it wrote to stdout and stderr.
        folder (Path): A folder of its own, made before the batch ran.
    """
    status: int | None
    output: str
    folder: Path

    def check(self) -> str:
        """The output, after checking that the tool succeeded."""
        assert self.status == 0, (
            f'exit status {self.status}:\n{self.output[-8000:]}')
        return self.output


def run_stock_tools(jobs: dict, folder: Path) -> dict[str, ToolRun]:
    """Run stock tools, ``{key: [tool, *args]}``, in order, in one Python
    process (:data:`STOCK_TOOL_BATCH`); each job's own folder is
    ``folder / key`` (made first, for the arguments to name)."""
    keys = list(jobs)
    spec = []
    for key in keys:
        (folder / key).mkdir(parents=True, exist_ok=True)
        tool, *args = jobs[key]
        spec.append(dict(tool=str(tool), args=[str(a) for a in args],
                         log=str(folder / f'{key}.log')))
    (folder / 'jobs.json').write_text(json.dumps(spec, indent=1))
    results = folder / 'results.json'
    proc = run([STOCK_TOOL_BATCH, folder / 'jobs.json', results],
               cwd=folder, check=False)
    statuses = json.loads(results.read_text()) if results.is_file() else []
    runs = {}
    for i, key in enumerate(keys):
        log = Path(spec[i]['log'])
        output = log.read_text(errors='replace') if log.is_file() else ''
        status = statuses[i] if i < len(statuses) else None
        if status is None:
            output += (f'\n[the batch stopped before this job finished, '
                       f'exit status {proc.returncode}]\n'
                       f'{proc.stdout[-4000:]}')
        runs[key] = ToolRun(status, output, folder / key)
    return runs


@pytest.fixture(scope='session')
def stock_trainings(ade_root, coco_root, tmp_path_factory) -> dict:
    """The package's configs under the codebases' own ``tools/train.py``
    and ``tools/test.py``, one after the other in one process (each run
    with an ``experiment_name`` of its own, so that no two share mmengine's
    logger or visualizer): the configs as they are, with only
    :data:`CPU_OPTIONS` for a GPU-less machine, and the two examples that
    put FcaFormer into stock upstream configs.

    Returns:
        dict[str, ToolRun]: ``mmseg_train``, ``mmdet_train``, ``mmdet_test``
        (Mask R-CNN's checkpoint of ``mmdet_train``), ``convnext_example``
        (mmseg's AMP ConvNeXt UperNet made CPU-ready by ``to_cpu_config``)
        and ``retinanet_example``; each run's work dir is its folder.
    """
    from mmengine.config import Config

    from fcaformer_mm.apis import get_config_path
    from fcaformer_mm.utils.cpu import to_cpu_config

    folder = tmp_path_factory.mktemp('stock_trainings')
    seg = seg_options(ade_root, max_iters=2)
    det = mask_rcnn_options(coco_root)
    retinanet = {
        **det_options(coco_root, 'retinanet'),
        'train_dataloader.dataset.indices': 2,
        'train_cfg.val_interval': 100,
    }
    cpu_config = folder / 'convnext_example_cpu.py'
    to_cpu_config(Config.fromfile(get_config_path(
        'upernet_fcaformer_l2_stock_convnext_ade20k'))).dump(cpu_config)
    mmseg_train = stock_tool('mmseg', 'train.py')
    mmdet_train = stock_tool('mmdet', 'train.py')
    jobs = {
        'mmseg_train': (mmseg_train, SEG_CONFIG, {**seg, **CPU_OPTIONS}),
        'mmdet_train': (mmdet_train, MASK_RCNN_CONFIG, {**det,
                                                        **CPU_OPTIONS}),
        'mmdet_test': (stock_tool('mmdet', 'test.py'), MASK_RCNN_CONFIG,
                       folder / 'mmdet_train' / 'epoch_1.pth',
                       {**det, **CPU_OPTIONS}),
        'convnext_example': (mmseg_train, cpu_config, seg),
        'retinanet_example': (mmdet_train, get_config_path(
            'retinanet_fcaformer_l2_fpn_1x_coco'), retinanet),
    }
    return run_stock_tools(
        {
            key: list(args[:-1]) + ['--work-dir', folder / key] +
            options(**args[-1], experiment_name=key)
            for key, args in jobs.items()
        }, folder)
