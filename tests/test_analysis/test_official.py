"""Tests of fcaformer_mm.analysis.official, the loader of the official code.

The official repository is not available here; these tests lay out model
files of their own where a checkout has them and load those.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from fcaformer_mm.analysis import official

# Imports exactly what the official files import from mmcv 1.x, mmseg 0.x,
# the official mmcv_custom and timm.
OFFICIAL_LIKE = '''
import torch
from torch import nn
from timm.models.layers import trunc_normal_, DropPath, to_2tuple
from timm.models.registry import register_model
import matplotlib.pyplot as plt
from mmcv_custom import load_checkpoint
from mmseg.utils import get_root_logger
from mmseg.models.builder import BACKBONES


@BACKBONES.register_module()
class FcaFormer_SH_512(nn.Module):
    def __init__(self, dim=4):
        super().__init__()
        self.conv = nn.Conv2d(3, dim, 1)
        trunc_normal_(self.conv.weight, std=.02)
        self.drop = DropPath(0.1)
        self.size = to_2tuple(7)

    def forward(self, x):
        return [self.drop(self.conv(x))]


@register_model
def fcaformer_l1(**kwargs):
    return FcaFormer_SH_512(**kwargs)


def checkpoint(path):
    return load_checkpoint(path)
'''

STAND_IN_NAMES = ('timm', 'timm.models', 'timm.models.layers',
                  'timm.models.registry', 'mmcv_custom', 'mmseg',
                  'mmseg.utils', 'mmseg.models', 'mmseg.models.builder')


def checkout(root: Path, text: str = OFFICIAL_LIKE) -> Path:
    for relative in (official.DENSE_FILE, official.CLASSIFIER_FILE):
        file = root / relative
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(text)
    return root


@pytest.mark.parametrize('load, relative', [
    (official.load_official_dense, official.DENSE_FILE),
    (official.load_official_classifier, official.CLASSIFIER_FILE),
])
def test_not_a_checkout(tmp_path, load, relative):
    with pytest.raises(FileNotFoundError) as info:
        load(tmp_path)
    message = str(info.value)
    assert relative.as_posix() in message
    assert official.OFFICIAL_REPO in message
    with pytest.raises(FileNotFoundError, match='hkzhang-git/FcaFormer'):
        load(tmp_path / 'missing.py')


def test_stand_ins_only_while_loading(tmp_path):
    root = checkout(tmp_path)
    before = {name: sys.modules.get(name) for name in STAND_IN_NAMES}
    dense = official.load_official_dense(root)
    classifier = official.load_official_classifier(root)
    assert {name: sys.modules.get(name) for name in STAND_IN_NAMES} == before
    assert dense.__name__ == 'FcaFormer_SH_512'
    model = classifier.fcaformer_l1(dim=5).eval()
    assert model.size == (7, 7)
    assert model(torch.zeros(1, 3, 4, 4))[0].shape == (1, 5, 4, 4)
    # The stand-in loader of checkpoints says what to do instead.
    with pytest.raises(RuntimeError, match='load_state_dict'):
        classifier.checkpoint('x.pth')


def test_the_model_file_itself(tmp_path):
    file = checkout(tmp_path) / official.DENSE_FILE
    assert official.load_official_dense(file)().conv.out_channels == 4


def test_missing_package_is_named(tmp_path):
    root = checkout(tmp_path, 'import fcaformer_no_such_package\n')
    with pytest.raises(ImportError,
                       match='pip install fcaformer_no_such_package'):
        official.load_official_dense(root)


def test_import_without_stand_in(tmp_path):
    root = checkout(tmp_path, 'from mmseg.core import add_prefix\n')
    before = sys.modules.get('mmseg')
    with pytest.raises(ImportError, match="'mmseg.core'.*no stand-in"):
        official.load_official_classifier(root)
    assert sys.modules.get('mmseg') is before
