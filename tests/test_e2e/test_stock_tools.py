"""The codebases' own tools, as their wheels ship them (``<pkg>/.mim/tools``,
what ``mim run`` runs), on every config of the package, on synthetic data:
mmpretrain's, mmseg's and mmdet's ``browse_dataset.py``, mmdet's
``benchmark.py`` and the three ``print_config.py``.

The tools only read configs and data, so they run one after the other in
one Python process (:func:`run_stock_tools`, made once for the module);
each test checks its own run."""
from __future__ import annotations

from pathlib import Path

import pytest

from fcaformer_mm.apis import get_config_path, list_models

from .conftest import (
    cls_options,
    det_kind,
    det_options,
    options,
    run_stock_tools,
    seg_options,
    stock_tool,
)

CLS_MODELS = list_models(task='Image Classification')
SEG_MODELS = list_models(task='Semantic Segmentation')
DET_MODELS = list_models(task='Object Detection')
SCOPES = {
    **dict.fromkeys(CLS_MODELS, 'mmpretrain'),
    **dict.fromkeys(SEG_MODELS, 'mmseg'),
    **dict.fromkeys(DET_MODELS, 'mmdet'),
}
BROWSE_MODES = ('transformed', 'pipeline')
BENCHMARK_TASKS = ('dataloader', 'dataset')


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob('*')
                  if p.suffix.lower() in ('.jpg', '.jpeg', '.png')
                  and p.stat().st_size > 0)


def _jobs(folder: Path, imagenet_root: Path, ade_root: Path,
          coco_root: Path) -> dict:
    """Every run of the module: ``{key: [tool, *args]}``."""
    jobs = {}
    browse = stock_tool('mmpretrain', 'visualization/browse_dataset.py')
    for name in CLS_MODELS:
        for mode in BROWSE_MODES:
            key = f'browse-{name}-{mode}'
            jobs[key] = [
                browse, get_config_path(name), '--output-dir',
                folder / key, '--not-show', '--mode', mode,
                '--show-number', 2
            ] + options(**cls_options(imagenet_root, tiny=False))
    browse = stock_tool('mmseg', 'analysis_tools/browse_dataset.py')
    for name in SEG_MODELS:
        opts = seg_options(ade_root, tiny=False)
        opts['train_dataloader.dataset.indices'] = 2
        jobs[f'browse-{name}'] = [
            browse, get_config_path(name), '--output-dir',
            folder / f'browse-{name}', '--not-show'
        ] + options(**opts)
    browse = stock_tool('mmdet', 'analysis_tools/browse_dataset.py')
    benchmark = stock_tool('mmdet', 'analysis_tools/benchmark.py')
    for name in DET_MODELS:
        opts = det_options(coco_root, det_kind(name), tiny=False)
        jobs[f'browse-{name}'] = [
            browse, get_config_path(name), '--output-dir',
            folder / f'browse-{name}', '--not-show'
        ] + options(**opts)
        for task in BENCHMARK_TASKS:
            key = f'benchmark-{name}-{task}'
            jobs[key] = [
                benchmark, get_config_path(name), '--task', task,
                '--max-iter', 3, '--num-warmup', 1, '--log-interval', 1,
                '--repeat-num', 1, '--work-dir', folder / key
            ] + options(**opts, **{'train_dataloader.dataset.indices': 2})
    for name in list_models():
        jobs[f'print_config-{name}'] = [
            stock_tool(SCOPES[name], 'misc/print_config.py'),
            get_config_path(name)
        ]
    return jobs


@pytest.fixture(scope='module')
def runs(imagenet_root, ade_root, coco_root, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp('stock_tools')
    return run_stock_tools(
        _jobs(folder, imagenet_root, ade_root, coco_root), folder)


@pytest.mark.parametrize('mode', BROWSE_MODES)
@pytest.mark.parametrize('name', CLS_MODELS)
def test_mmpretrain_browse_dataset(name, mode, runs):
    run = runs[f'browse-{name}-{mode}']
    output = run.check()
    assert len(_images(run.folder)) == 2, output


@pytest.mark.parametrize('name', SEG_MODELS)
def test_mmseg_browse_dataset(name, runs):
    run = runs[f'browse-{name}']
    run.check()
    assert len(_images(run.folder)) == 2


@pytest.mark.parametrize('name', DET_MODELS)
def test_mmdet_browse_dataset(name, runs):
    run = runs[f'browse-{name}']
    run.check()
    assert len(_images(run.folder)) == 2


@pytest.mark.parametrize('task', BENCHMARK_TASKS)
@pytest.mark.parametrize('name', DET_MODELS)
def test_mmdet_benchmark(name, task, runs):
    """The speed of the config's data loader and dataset (the inference task
    of mmdet's tool moves the model to CUDA unconditionally)."""
    assert 'Overall fps' in runs[f'benchmark-{name}-{task}'].check()


@pytest.mark.parametrize('name', list_models())
def test_print_config_of_its_codebase(name, runs):
    output = runs[f'print_config-{name}'].check()
    assert f"default_scope = '{SCOPES[name]}'" in output
    assert "type='FcaFormer'" in output
