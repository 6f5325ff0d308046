"""The codebases' own tools, as their wheels ship them (``<pkg>/.mim/tools``,
what ``mim run`` runs), on every config of the package, on synthetic data:
mmpretrain's, mmseg's and mmdet's ``browse_dataset.py``, mmdet's
``benchmark.py`` and the three ``print_config.py``."""
from __future__ import annotations

from pathlib import Path

import pytest

from fcaformer_mm.apis import get_config_path, list_models

from .conftest import (
    _det_options,
    cls_options,
    options,
    run,
    seg_options,
)

CLS_MODELS = list_models(task='Image Classification')
SEG_MODELS = list_models(task='Semantic Segmentation')
DET_MODELS = list_models(task='Object Detection')


def stock_tool(package: str, path: str) -> Path:
    """A tool of an installed codebase's wheel."""
    module = pytest.importorskip(package)
    tool = Path(module.__file__).parent / '.mim' / 'tools' / path
    assert tool.is_file(), f'{tool} is not in the installed {package} wheel'
    return tool


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob('*')
                  if p.suffix.lower() in ('.jpg', '.jpeg', '.png')
                  and p.stat().st_size > 0)


def _det_data_options(name: str, root: Path) -> dict:
    """The synthetic COCO and small sizes, for whichever detector."""
    opts = _det_options(root, cascade='cascade' in name)
    if 'retinanet' in name:
        opts = {
            k: v
            for k, v in opts.items()
            if not k.startswith(('model.train_cfg', 'model.test_cfg',
                                 'train_dataloader.dataset.pipeline'))
        }
        opts['train_dataloader.dataset.pipeline.2.scale'] = '(160,128)'
    return opts


@pytest.mark.parametrize('mode', ['transformed', 'pipeline'])
@pytest.mark.parametrize('name', CLS_MODELS)
def test_mmpretrain_browse_dataset(name, mode, imagenet_root, tmp_path):
    out = tmp_path / 'vis'
    proc = run([
        stock_tool('mmpretrain', 'visualization/browse_dataset.py'),
        get_config_path(name), '--output-dir', out, '--not-show', '--mode',
        mode, '--show-number', 2
    ] + options(**cls_options(imagenet_root)),
               cwd=tmp_path)
    assert len(_images(out)) == 2, proc.stdout


@pytest.mark.parametrize('name', SEG_MODELS)
def test_mmseg_browse_dataset(name, ade_root, tmp_path):
    out = tmp_path / 'vis'
    opts = seg_options(ade_root)
    opts['train_dataloader.dataset.indices'] = 2
    run([
        stock_tool('mmseg', 'analysis_tools/browse_dataset.py'),
        get_config_path(name), '--output-dir', out, '--not-show'
    ] + options(**opts),
        cwd=tmp_path)
    assert len(_images(out)) == 2


@pytest.mark.parametrize('name', DET_MODELS)
def test_mmdet_browse_dataset(name, coco_root, tmp_path):
    out = tmp_path / 'vis'
    run([
        stock_tool('mmdet', 'analysis_tools/browse_dataset.py'),
        get_config_path(name), '--output-dir', out, '--not-show'
    ] + options(**_det_data_options(name, coco_root)),
        cwd=tmp_path)
    assert len(_images(out)) == 2


@pytest.mark.parametrize('task', ['dataloader', 'dataset'])
@pytest.mark.parametrize('name', DET_MODELS)
def test_mmdet_benchmark(name, task, coco_root, tmp_path):
    """The speed of the config's data loader and dataset (the inference task
    of mmdet's tool moves the model to CUDA unconditionally)."""
    opts = {**_det_data_options(name, coco_root),
            'train_dataloader.dataset.indices': 2}
    proc = run([
        stock_tool('mmdet', 'analysis_tools/benchmark.py'),
        get_config_path(name), '--task', task, '--max-iter', 3,
        '--num-warmup', 1, '--log-interval', 1, '--repeat-num', 1,
        '--work-dir', tmp_path / 'work'
    ] + options(**opts),
               cwd=tmp_path)
    assert 'Overall fps' in proc.stdout


@pytest.mark.parametrize('name', list_models())
def test_print_config_of_its_codebase(name, tmp_path):
    scope = {
        **dict.fromkeys(CLS_MODELS, 'mmpretrain'),
        **dict.fromkeys(SEG_MODELS, 'mmseg'),
        **dict.fromkeys(DET_MODELS, 'mmdet'),
    }[name]
    proc = run([
        stock_tool(scope, 'misc/print_config.py'),
        get_config_path(name)
    ],
               cwd=tmp_path)
    assert f"default_scope = '{scope}'" in proc.stdout
    assert "type='FcaFormer'" in proc.stdout
