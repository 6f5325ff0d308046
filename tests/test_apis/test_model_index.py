"""The model index: every config is named, with measured params, the
paper's results and no invented weights; names resolve through
fcaformer_mm.apis and through mmpretrain's own get_model / list_models /
inference_model."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from fcaformer_mm.apis import (
    get_config,
    get_config_path,
    get_inferencer,
    get_model_info,
    list_models,
    load_model_index,
    resource_root,
)

REPO = Path(__file__).resolve().parents[2]

#: The paper's results (REFERENCE sections 1 and 2), by model name.
PAPER = {
    'fcaformer_l1_in1k': {'Top 1 Accuracy': 80.3},
    'fcaformer_l2_in1k': {'Top 1 Accuracy': 83.1},
    'fcaformer_l3_in1k': {'Top 1 Accuracy': 84.2},
    'fcaformer_l4_in1k': {'Top 1 Accuracy': 84.9},
    'upernet_fcaformer_l2_ade20k': {'mIoU(ms+flip)': 47.6},
    'mask_rcnn_fcaformer_l2_fpn_3x_coco': {'box AP': 47.0, 'mask AP': 42.1},
    'cascade_mask_rcnn_fcaformer_l2_fpn_3x_coco': {
        'box AP': 51.0,
        'mask AP': 43.9
    },
}
TASK_OF_SCOPE = {
    'mmpretrain': {'Image Classification'},
    'mmseg': {'Semantic Segmentation'},
    'mmdet': {'Object Detection', 'Instance Segmentation'},
}


def repo_configs() -> list[str]:
    """Every config of the repository, as a path relative to it."""
    return sorted(
        str(p.relative_to(REPO))
        for p in (REPO / 'configs').rglob('*.py')
        if '_base_' not in p.parts)


def test_resource_root_is_the_clone():
    assert resource_root() == REPO


def test_every_config_is_in_the_index_once():
    index = load_model_index()
    listed = sorted(entry['Config'] for entry in index.values())
    assert listed == repo_configs()
    # Names are the config names, as the codebases name theirs.
    for key, entry in index.items():
        assert key == Path(entry['Config']).stem


def test_metafiles_are_one_per_family_in_the_openmmlab_format():
    index = yaml.safe_load((REPO / 'model-index.yml').read_text())
    assert set(index) == {'Import'}
    for metafile in index['Import']:
        assert metafile.startswith('configs/')
        assert metafile.endswith('/metafile.yml')
        meta = yaml.safe_load((REPO / metafile).read_text())
        collections = {c['Name'] for c in meta['Collections']}
        for model in meta['Models']:
            assert model['In Collection'] in collections
        for collection in meta['Collections']:
            assert collection['Paper']['URL'] == (
                'https://arxiv.org/abs/2211.07198')


@pytest.mark.parametrize('name', sorted(load_model_index()))
def test_entry_fields(name):
    entry = get_model_info(name)
    meta = entry['Metadata']
    assert isinstance(meta['Parameters'], int) and meta['Parameters'] > 1e6
    assert isinstance(meta['FLOPs'], int) and meta['FLOPs'] > 1e9
    assert meta['Training Data'] in ('ImageNet-1k', 'ADE20K', 'COCO')
    # No checkpoint is published for these configs: the key is there (the
    # inferencers read it) and says so, with no made-up URL.
    assert 'Weights' in entry and entry['Weights'] is None
    scope = get_config(name).default_scope
    results = entry.get('Results') or []
    for result in results:
        assert result['Task'] in TASK_OF_SCOPE[scope]
        assert result['Dataset'] == meta['Training Data']
    metrics = {k: v for r in results for k, v in r['Metrics'].items()}
    assert metrics == PAPER.get(name, {})


def _count_params(name: str) -> int:
    from mmengine.registry import MODELS, DefaultScope

    import fcaformer_mm  # noqa: F401

    cfg = get_config(name)
    model_cfg = cfg.model.copy()
    if cfg.get('data_preprocessor') is not None:
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(model_cfg)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize('name', sorted(load_model_index()))
def test_parameters_are_those_of_the_built_model(name):
    assert _count_params(name) == get_model_info(name)['Metadata'][
        'Parameters']


def test_flops_of_l1_are_measured():
    """The MACs of the index are get_flops.py's full count (checked on the
    cheapest model; the others were measured the same way)."""
    from fcaformer_mm.analysis.flops import analyse
    result = analyse(get_config_path('fcaformer_l1_in1k'))
    meta = get_model_info('fcaformer_l1_in1k')['Metadata']
    assert meta['FLOPs'] == result['full_macs']
    assert meta['Parameters'] == result['params']


def test_names_and_errors():
    assert list_models('*in1k') == [
        f'fcaformer_l{i}_in1k' for i in (1, 2, 3, 4)
    ]
    assert list_models(task='Semantic Segmentation') == sorted(
        n for n in load_model_index()
        if get_config(n).default_scope == 'mmseg')
    path = Path(get_config_path('UPERNET_FCAFORMER_L2_ADE20K'))
    assert path == REPO / 'configs' / 'upernet_fcaformer_l2_ade20k.py'
    with pytest.raises(ValueError, match='Did you mean fcaformer_l2_in1k'):
        get_config_path('fcaformer_l2_in1')
    with pytest.raises(ValueError, match='list_models'):
        get_model_info('resnet50')


# --------------------------------------------------------------------------
# mmpretrain's own API, by name, after `import fcaformer_mm`.
# --------------------------------------------------------------------------
def test_mmpretrain_get_model_and_list_models_by_name():
    pytest.importorskip('mmpretrain')
    import mmpretrain

    import fcaformer_mm  # noqa: F401  (registers the model index)

    assert mmpretrain.list_models('*fca*') == [
        f'fcaformer_l{i}_in1k' for i in (1, 2, 3, 4)
    ]
    model = mmpretrain.get_model('fcaformer_l1_in1k')
    assert type(model).__name__ == 'ImageClassifier'
    assert type(model.backbone).__name__ == 'FcaFormer'
    # No weights in the index: mmpretrain says so and keeps the random init.
    with pytest.warns(UserWarning, match='Unable to find pre-defined'):
        mmpretrain.get_model('fcaformer_l1_in1k', pretrained=True)


def test_mmpretrain_inference_model_by_name(tmp_path):
    pytest.importorskip('mmpretrain')
    import mmpretrain

    import fcaformer_mm  # noqa: F401

    torch.manual_seed(0)
    image = np.random.default_rng(0).integers(
        0, 255, (96, 128, 3), dtype=np.uint8)
    from mmengine.registry import DefaultScope

    # mmpretrain's inferencer builds its pipeline in the current default
    # scope, which an earlier Runner in the same process may have left at
    # another codebase (upstream behaviour): name mmpretrain's.
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        result = mmpretrain.inference_model(
            'fcaformer_l1_in1k', image, pretrained=False, device='cpu')
    assert len(result['pred_scores']) == 1000
    assert 0 <= result['pred_label'] < 1000


def test_get_inferencer_after_another_codebase_scope():
    """A Runner of another codebase earlier in the process leaves its
    default scope current; the inferencer still builds its own pipeline."""
    pytest.importorskip('mmpretrain')
    from mmengine.registry import DefaultScope

    image = np.random.default_rng(0).integers(
        0, 255, (64, 64, 3), dtype=np.uint8)
    with DefaultScope.overwrite_default_scope('mmengine'):
        inferencer = get_inferencer('fcaformer_l1_in1k', device='cpu')
        assert DefaultScope.get_current_instance().scope_name == 'mmengine'
        result = inferencer(image)[0]
    assert 0 <= result['pred_label'] < 1000


def test_registration_is_idempotent():
    pytest.importorskip('mmpretrain')
    import fcaformer_mm  # noqa: F401
    from fcaformer_mm.apis import register_mmpretrain_models

    assert register_mmpretrain_models() == []  # all there already


# --------------------------------------------------------------------------
# mmseg's and mmdet's inferencers: the config path, or get_inferencer.
# --------------------------------------------------------------------------
def test_mmseg_inferencer_by_name(tmp_path):
    pytest.importorskip('mmseg')
    from mmseg.apis import MMSegInferencer

    image = np.random.default_rng(0).integers(
        0, 255, (48, 64, 3), dtype=np.uint8)
    # A bare name searches mmseg's own model index only.
    with pytest.raises(ValueError, match='Cannot find model'):
        MMSegInferencer(model='upernet_fcaformer_l2_ade20k', device='cpu')
    # The one-liner: the config path of the name.
    inferencer = MMSegInferencer(
        model=get_config_path('upernet_fcaformer_l2_ade20k'), device='cpu')
    pred = inferencer(image)['predictions']
    assert pred.shape == (48, 64)
    inferencer = get_inferencer('upernet_fcaformer_l2_ade20k', device='cpu')
    assert type(inferencer).__name__ == 'MMSegInferencer'


def test_mmdet_inferencer_by_name():
    pytest.importorskip('mmdet')
    from mmdet.apis import DetInferencer

    with pytest.raises(ValueError, match='Cannot find model'):
        DetInferencer(model='mask_rcnn_fcaformer_l2_fpn_3x_coco',
                      device='cpu')
    inferencer = get_inferencer(
        'mask_rcnn_fcaformer_l2_fpn_3x_coco', device='cpu')
    assert type(inferencer).__name__ == 'DetInferencer'
    image = np.random.default_rng(0).integers(
        0, 255, (64, 80, 3), dtype=np.uint8)
    pred = inferencer(image, no_save_vis=True)['predictions'][0]
    assert {'labels', 'scores', 'bboxes', 'masks'} <= set(pred)
