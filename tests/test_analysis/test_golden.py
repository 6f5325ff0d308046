"""fcaformer_mm.analysis.golden: the cases that remake the golden fixtures
of the tests from the official code."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fcaformer_mm.analysis import golden

FIXTURE = Path(__file__).parents[2] / 'tests' / 'data' / 'fcaformer_golden.pth'


def test_default_out_is_the_committed_fixture():
    assert golden.DEFAULT_OUT == FIXTURE


def test_cases_match_the_committed_fixture():
    # The script rebuilds exactly the committed cases (all but outputs).
    fixture = torch.load(FIXTURE, map_location='cpu', weights_only=True)
    assert fixture['weight_seed'] == golden.WEIGHT_SEED
    assert fixture['note'] == golden.NOTE
    assert len(fixture['cases']) == len(golden.CASES)
    for case, (spec, _) in zip(fixture['cases'], golden.CASES):
        assert {k: v for k, v in case.items()
                if k not in ('input_sum', 'outputs')} == spec
        x = golden.seeded_input(spec['input_shape'], spec['input_seed'])
        assert x.double().sum().item() == pytest.approx(
            case['input_sum'], abs=1e-6)


def test_save_atomically(tmp_path):
    out = tmp_path / 'sub' / 'golden.pth'
    golden.save_atomically({'cases': [{'outputs': [torch.ones(2)]}]}, out)
    assert sorted(p.name for p in out.parent.iterdir()) == ['golden.pth']
    saved = torch.load(out, weights_only=True)
    assert torch.equal(saved['cases'][0]['outputs'][0], torch.ones(2))
    new = {'cases': [{'outputs': [torch.full((2, ), 1.5)]}]}
    assert golden.max_differences(new, saved) == [0.5]
    assert golden.max_differences(
        {'cases': [{'outputs': [torch.ones(3)]}]}, saved) == [None]
