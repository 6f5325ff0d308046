"""fcaformer_mm.analysis.runtimes: each runtime computes what the eager
model computes, and torch.compile really compiles every model of a table."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters

from fcaformer_mm.analysis.runtimes import RUNTIMES, make_runner


def _convs(n: int) -> nn.Module:
    return nn.Sequential(*[nn.Conv2d(3, 3, 3, padding=1) for _ in range(n)])


@pytest.mark.parametrize('runtime', RUNTIMES)
def test_runner_matches_eager(runtime):
    model = _convs(2).eval()
    x = torch.randn(1, 3, 16, 16)
    extra = {'compile_backend': 'aot_eager'} if runtime == 'compile' else {}
    runner = make_runner(runtime, model, None, x, **extra)
    assert runner.name == runtime
    assert runner.max_abs_diff < 1e-5
    with torch.no_grad():
        out = runner(torch.randn(1, 3, 16, 16))
    assert tuple(out[0].shape if isinstance(out, list) else out.shape) == (
        1, 3, 16, 16)


def test_compile_past_the_recompile_limit():
    """A table has more models than dynamo's recompile limit for one code
    object (8): each still gets its own graph instead of running eager."""
    graphs = counters['stats']['unique_graphs']
    for n in range(1, 11):
        make_runner('compile', _convs(n), None, torch.randn(1, 3, 8, 8),
                    compile_backend='aot_eager')
    assert counters['stats']['unique_graphs'] - graphs == 10


def test_unknown_runtime_is_refused():
    with pytest.raises(ValueError, match='choose from'):
        make_runner('tvm', _convs(1), None, torch.randn(1, 3, 8, 8))
