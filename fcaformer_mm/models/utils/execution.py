"""Which code path FcaFormer takes, chosen per thread and per context.

FcaFormer has one reference computation, where every layer is called as its
module (what module hooks such as MAC counters see), eager inference paths
that compute the same numbers faster on the CPU (see
:mod:`fcaformer_mm.models.utils.cpu_kernels`), and training kernels that
compute the same numbers and gradients keeping less memory for the backward
pass (see :mod:`fcaformer_mm.models.utils.train_kernels`). The choice is held
in a :class:`contextvars.ContextVar`, so it is local to a thread (and to an
asyncio task): one thread can run the reference while another runs the fast
paths. There is no module-level switch to assign.

Example:
    >>> from fcaformer_mm.models.utils import execution_options
    >>> with execution_options(fast_inference=False):   # the reference
    ...     outs = model(images)
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from contextvars import ContextVar

import torch
from torch import nn


@dataclasses.dataclass(frozen=True)
class ExecutionOptions:
    """How FcaFormer computes its forward pass.

    Every combination computes the same numbers up to float rounding.

    Args:
        fast_inference (bool): Take the eager inference paths (eval mode, no
            autograd, not compiled or traced): MLPs in row chunks with the
            residual added in place, Conv-BN folded per forward with GELU
            fused (or followed by its BatchNorm), 1x1 convolutions as linear
            layers. False runs the reference computation, where every
            layer is called as its module, in inference and in training
            (the training kernels are off too). Defaults to True.
        fast_training (bool): Take the training kernels (training mode,
            autograd on, eager, float32 outside autocast): autograd
            functions that keep less for the backward pass and recompute
            cheap element-wise work (see :mod:`.train_kernels`). False
            calls every layer as its module in training. Defaults to True.
        onednn_linear (bool): On the fast paths, run float32 CPU linear
            layers through oneDNN (GELU fused) rather than ``F.linear``'s
            BLAS (what ``nn.Linear`` and the peer models use). Which is
            faster depends on the machine: on the 2-vCPU AMD EPYC (Zen 3)
            of docs/performance_inference.md the BLAS is faster for every
            FcaFormer GEMM at 224x224; an earlier AMD EPYC VM ran oneDNN
            twice as fast. Measure with ``benchmark.py --onednn-linear``
            against the default. Defaults to False.
        mlp_chunk (int): On the fast paths, rows per chunk of the MLPs; 0
            runs them whole. Defaults to 2048.
        fused_attention (bool): Use ``scaled_dot_product_attention``; False
            computes the attention with explicit matrix products and
            softmax. Defaults to True.
        explicit_windows (bool): Pad and partition the windows of the FCA
            blocks with explicit ``pad``/``reshape`` (what tracing for ONNX
            export always does) instead of one ``index_select``. Defaults to
            False.
        attention_chunk_bytes (int): In the training kernels' attention
            backward, bytes of attention probabilities recomputed at once
            (at least one window at a time). Defaults to 16 MiB.
    """

    fast_inference: bool = True
    fast_training: bool = True
    onednn_linear: bool = False
    mlp_chunk: int = 2048
    fused_attention: bool = True
    explicit_windows: bool = False
    attention_chunk_bytes: int = 16 * 2**20

    def __post_init__(self) -> None:
        if not isinstance(self.mlp_chunk, int) or self.mlp_chunk < 0:
            raise ValueError('mlp_chunk must be a non-negative int, got '
                             f'{self.mlp_chunk!r}.')
        if not isinstance(self.attention_chunk_bytes,
                          int) or self.attention_chunk_bytes < 1:
            raise ValueError('attention_chunk_bytes must be a positive int, '
                             f'got {self.attention_chunk_bytes!r}.')


_OPTIONS: ContextVar[ExecutionOptions] = ContextVar(
    'fcaformer_mm_execution_options', default=ExecutionOptions())


_DEFAULTS = ExecutionOptions()


def current_options() -> ExecutionOptions:
    """The :class:`ExecutionOptions` in force in this context.

    Graphs being compiled by ``torch.compile`` always get the defaults (the
    eager-only options do not apply to them anyway), so that a compiled
    graph never depends on the options of the context that compiled it.
    """
    if torch.compiler.is_compiling():
        return _DEFAULTS
    return _OPTIONS.get()


@contextlib.contextmanager
def execution_options(**changes) -> Iterator[ExecutionOptions]:
    """Change some :class:`ExecutionOptions` within a ``with`` block.

    Args:
        **changes: Fields of :class:`ExecutionOptions` and their values.

    Yields:
        ExecutionOptions: The options in force inside the block.
    """
    options = dataclasses.replace(_OPTIONS.get(), **changes)
    token = _OPTIONS.set(options)
    try:
        yield options
    finally:
        _OPTIONS.reset(token)


def reference_path() -> contextlib.AbstractContextManager:
    """Run FcaFormer's reference computation: every layer called as its
    module, in inference and in training
    (``execution_options(fast_inference=False)``)."""
    return execution_options(fast_inference=False)


def is_tracing() -> bool:
    """Whether the forward is being compiled, traced or exported."""
    return (torch.compiler.is_compiling() or torch.jit.is_tracing()
            or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export())


def is_exporting() -> bool:
    """Whether the forward is being traced by TorchScript (ONNX export)."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def fast_inference(module: nn.Module) -> bool:
    """Whether ``module`` may take an eager inference path right now.

    Only in eval mode, without autograd, in eager mode: compiled graphs get
    the plain operators, which inductor fuses itself (with
    ``torch._inductor.config.freezing`` it also folds the BatchNorms and
    packs the weights).
    """
    return (not is_tracing() and _OPTIONS.get().fast_inference
            and not module.training and not torch.is_grad_enabled())


def fast_training(module: nn.Module) -> bool:
    """Whether ``module`` may take the training kernels right now.

    Only in training mode, with autograd, in eager mode, unless the
    reference computation (``fast_inference=False``) or plain training
    (``fast_training=False``) is asked for. The kernels check the tensors
    themselves (:func:`.train_kernels.fits`).
    """
    if is_tracing() or not module.training or not torch.is_grad_enabled():
        return False
    options = _OPTIONS.get()
    return options.fast_inference and options.fast_training
