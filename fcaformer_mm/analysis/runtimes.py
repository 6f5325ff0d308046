"""The runtimes a user deploys a model with, behind one call.

``eager``
    PyTorch as the model is (the tensor path of its host,
    :func:`~fcaformer_mm.utils.model_builder.tensor_forward`).
``ort``
    ONNX Runtime: the tensor path exported at the measured input shape
    (TorchScript exporter, opset 17) and run by an ``InferenceSession`` on
    the CPU with all graph optimisations, ``intra_op_num_threads`` the
    process's torch threads and one inter-op thread; fp32 only.
``compile``
    ``torch.compile`` (inductor) under inductor's ``freezing``: the weights
    become constants, BatchNorms fold, oneDNN packs the weights, as for
    CPU inference; the compilation is done when the runner is made.

:func:`make_runner` prepares a model once (export or compilation, timed
apart) and checks the runner against the eager output on the example
input.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from fcaformer_mm.analysis.runtimes import make_runner
    >>> runner = make_runner('eager', nn.Conv2d(3, 4, 3), None,
    ...                      torch.randn(1, 3, 8, 8))
    >>> runner.name, runner.max_abs_diff
    ('eager', 0.0)
"""
from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from fcaformer_mm.utils.model_builder import TensorForward

__all__ = ['RUNTIMES', 'Runner', 'make_runner']

RUNTIMES = ('eager', 'ort', 'compile')


def _first(out: object) -> torch.Tensor:
    """The first output tensor of a model's output (tensor, tuple, list)."""
    while isinstance(out, (tuple, list)):
        out = out[0]
    return out


class Runner:
    """A prepared model: ``runner(x)`` runs it on ``x`` in its runtime.

    Attributes:
        name (str): The runtime.
        prepare_s (float): Seconds the export or compilation took.
        max_abs_diff (float): Largest absolute difference of the first
            output to the eager model's on the example input.
        max_abs_output (float): Largest absolute value of that eager
            output (the scale of the difference).
    """

    def __init__(self, name: str, call: Callable[[torch.Tensor], object],
                 prepare_s: float, keep: object = None) -> None:
        self.name = name
        self._call = call
        self.prepare_s = prepare_s
        self.max_abs_diff = 0.0
        self.max_abs_output = 0.0
        self._keep = keep  # what must outlive the call (a temp folder)

    def __call__(self, x: torch.Tensor) -> object:
        return self._call(x)


def _ort_runner(module: nn.Module, example: torch.Tensor) -> Runner:
    import onnxruntime as ort

    start = time.perf_counter()
    folder = tempfile.TemporaryDirectory(prefix='fcaformer_ort_')
    path = str(Path(folder.name) / 'model.onnx')
    with torch.no_grad():
        torch.onnx.export(
            module, (example, ), path, input_names=['input'],
            opset_version=17, dynamo=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    session = ort.InferenceSession(path, options,
                                   providers=['CPUExecutionProvider'])

    def call(x: torch.Tensor) -> object:
        return [torch.from_numpy(o)
                for o in session.run(None, {'input': x.numpy()})]

    return Runner('ort', call, time.perf_counter() - start, keep=folder)


def _compile_runner(module: nn.Module, example: torch.Tensor,
                    backend: str, mode: str | None) -> Runner:
    import torch._dynamo.config as dynamo_config
    import torch._inductor.config as inductor_config

    start = time.perf_counter()
    compiled = torch.compile(module, backend=backend, mode=mode)
    # freezing is read when the graph is compiled: at the first call. Every
    # model of a table shares its host's forward code, whose compiled
    # entries dynamo limits (recompile_limit, 8) before it falls back to
    # eager without a word; the limit only counts at compile time.
    with inductor_config.patch(freezing=True), dynamo_config.patch(
            recompile_limit=dynamo_config.accumulated_recompile_limit), \
            torch.no_grad():
        compiled(example)
    return Runner('compile', compiled, time.perf_counter() - start)


def make_runner(runtime: str, model: nn.Module, scope: str | None,
                example: torch.Tensor, compile_backend: str = 'inductor',
                compile_mode: str | None = None) -> Runner:
    """Prepare ``model`` (in eval mode) for ``runtime`` at the shape of
    ``example``.

    Args:
        runtime (str): One of :data:`RUNTIMES`.
        model (nn.Module): The model.
        scope (str, optional): Its default scope (its tensor path).
        example (torch.Tensor): An input of the shape to run (CPU for
            ``ort``).
        compile_backend (str): ``torch.compile``'s backend. Defaults to
            ``'inductor'``.
        compile_mode (str, optional): ``torch.compile``'s mode.

    Returns:
        Runner: Runs the model without autograd; ``max_abs_diff`` and
        ``max_abs_output`` set.

    Raises:
        ValueError: For an unknown runtime, or ``ort`` off the CPU.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f'Unknown runtime {runtime!r}; choose from '
                         f'{RUNTIMES}.')
    module = TensorForward(model.eval(), scope).eval()
    if runtime == 'eager':
        runner = Runner('eager', module, 0.0)
    elif runtime == 'ort':
        if example.device.type != 'cpu':
            raise ValueError('the ort runtime runs on the CPU only')
        runner = _ort_runner(module, example)
    else:
        runner = _compile_runner(module, example, compile_backend,
                                 compile_mode)
    with torch.no_grad():
        expected = _first(module(example)).float()
        got = _first(runner(example)).float()
    runner.max_abs_diff = float((got - expected).abs().max())
    runner.max_abs_output = float(expected.abs().max())
    return runner
