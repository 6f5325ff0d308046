"""Where time and memory go: one training step of a dense backbone, or
one inference of an edge-table classifier.

Training step (:func:`main_train_step`, ``tools/analysis_tools/
profile_train_step.py``): the step UperNet training asks of the backbone,
a batch of images in training mode (drop path and layer scale of the
UperNet configs, :mod:`fcaformer_mm.analysis.models`), forward, backward of
the sum of the output means, then AdamW. Models: ``fcaformer`` (the L2
dense backbone) and ``convnext-t``.

``saved``
    The activations autograd keeps for the backward pass, attributed to the
    module that saved them (grouped by module type and by operator), with
    the largest tensors. Storage shared by several saved tensors is counted
    once.
``ops``
    ``torch.profiler`` (``profile_memory=True``, ``record_shapes=True``) of
    one forward and backward: top operators by self CPU time and by the
    memory they allocate, and the peak of live CPU-allocator bytes.

Peak step memory and step time are measured by the benchmark
(:mod:`fcaformer_mm.analysis.benchmark`, ``--metrics train memory``).

Inference (:func:`main_inference`, ``tools/analysis_tools/
profile_inference.py``), for each edge-table model at batch 1, in eval mode
without autograd, after ``--warmup`` calls:

wall
    Median wall time of ``--repeats`` plain calls (no profiler).
operators
    ``torch.profiler`` over ``--repeats`` calls: the operators with the
    largest self CPU time per call, their sum, and the number of calls.
Python overhead
    The wall time of the profiled calls minus the summed self CPU time of
    all their operators: time outside the operators, in Python and in
    dispatch (an upper bound: the profiler's own cost is in it).
largest tensors
    The largest tensors that operators produce during one call (recorded by
    a ``TorchDispatchMode``), with their operators and shapes.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from fcaformer_mm.utils.model_builder import tensor_forward

from . import edge_table
from .models import build_backbone, images

__all__ = [
    'TRAIN_MODELS', 'build_training', 'Step', 'saved_activations',
    'report_saved', 'profile_ops', 'profile_model', 'format_profile',
    'main_train_step', 'main_inference'
]

#: Models of the training-step profile.
TRAIN_MODELS = ('fcaformer', 'convnext-t')


def build_training(name: str, with_cp: bool = False) -> nn.Module:
    """The backbone ``name`` as the benchmark builds it, in training mode.

    Raises:
        ValueError: For a model not in :data:`TRAIN_MODELS`.
    """
    if name not in TRAIN_MODELS:
        raise ValueError(f'Unknown model {name!r}; choose from '
                         f'{TRAIN_MODELS}.')
    torch.manual_seed(0)
    model = build_backbone(name, with_cp)
    model.train()  # mmpretrain's ConvNeXt.train() returns None
    return model


def forward_backward(model: nn.Module, x: torch.Tensor) -> None:
    """Forward, then backward of the sum of the output means."""
    sum(o.mean() for o in model(x)).backward()


class Step:
    """One model's training step: forward, backward, AdamW.

    Args:
        model (nn.Module): The model, in training mode.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=1e-6)

    def __call__(self, x: torch.Tensor) -> None:
        forward_backward(self.model, x)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


# --------------------------------------------------------------------------
# Training step
# --------------------------------------------------------------------------
def saved_activations(model: nn.Module, x: torch.Tensor) -> list[dict]:
    """Every tensor autograd saves in one forward, once per storage.

    Returns dicts with ``module`` (path of the innermost module running),
    ``type`` (its class), ``op`` (the autograd node that saved it, when
    known), ``shape``, ``bytes``.
    """
    params = {p.data_ptr() for p in model.parameters()}
    params |= {b.data_ptr() for b in model.buffers()}
    stack: list[tuple[str, str]] = [('', type(model).__name__)]
    handles = []
    for name, module in model.named_modules():
        if module is model:
            continue

        def pre(mod, args, name=name):
            stack.append((name, type(mod).__name__))

        def post(mod, args, out):
            stack.pop()

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))
    seen: set[int] = set()
    records: list[dict] = []

    def pack(t: torch.Tensor):
        try:
            ptr = t.untyped_storage().data_ptr()
            nbytes = t.untyped_storage().nbytes()
        except (RuntimeError, NotImplementedError):
            return t
        if ptr in params or ptr in seen or nbytes == 0:
            return t
        seen.add(ptr)
        name, kind = stack[-1]
        records.append(dict(module=name, type=kind, shape=tuple(t.shape),
                            dtype=str(t.dtype).replace('torch.', ''),
                            bytes=nbytes, ptr=ptr, grad_fn=None))
        return t

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            outs = model(x)
    finally:
        for h in handles:
            h.remove()
    # Name the saving operator: walk the graph, match saved storages.
    owner: dict[int, str] = {}
    todo = [o.grad_fn for o in outs if o.grad_fn is not None]
    visited = set()
    while todo:
        fn = todo.pop()
        if fn is None or fn in visited:
            continue
        visited.add(fn)
        for attr in dir(fn):
            # aten nodes expose ``_saved_*``; custom functions
            # ``saved_tensors``.
            if not attr.startswith('_saved_') and attr != 'saved_tensors':
                continue
            with contextlib.suppress(Exception):
                value = getattr(fn, attr)
                values = value if isinstance(value, (tuple, list)) else [
                    value]
                for v in values:
                    if isinstance(v, torch.Tensor):
                        owner.setdefault(v.untyped_storage().data_ptr(),
                                         type(fn).__name__)
        todo.extend(f for f, _ in fn.next_functions)
    for rec in records:
        rec['grad_fn'] = owner.get(rec.pop('ptr'))
    del outs
    return records


def report_saved(records: list[dict], top: int) -> str:
    """:func:`saved_activations`' records as text: totals by module type
    and saving node, and the ``top`` largest tensors."""
    total = sum(r['bytes'] for r in records)
    lines = [f'saved for backward: {total / 2**20:.1f} MiB in '
             f'{len(records)} storages']
    by_type = collections.Counter()
    by_op = collections.Counter()
    for r in records:
        by_type[r['type']] += r['bytes']
        by_op[f'{r["type"]} / {r["grad_fn"]}'] += r['bytes']
    lines.append('\nby module type (MiB, share):')
    for kind, b in by_type.most_common():
        lines.append(f'  {kind:<28}{b / 2**20:>9.1f}{b / total:>8.1%}')
    lines.append('\nby module type / saving node (MiB):')
    for kind, b in by_op.most_common(top):
        lines.append(f'  {kind:<58}{b / 2**20:>9.1f}')
    lines.append(f'\nlargest {top} tensors:')
    for r in sorted(records, key=lambda r: -r['bytes'])[:top]:
        lines.append(f'  {r["bytes"] / 2**20:>7.1f} MiB  {r["module"]:<40} '
                     f'{r["grad_fn"]!s:<26} {list(r["shape"])}')
    return '\n'.join(lines)


def allocator_peak(prof) -> tuple[float, float]:
    """Peak and final live bytes (MiB) of the CPU allocator in a profile,
    from the ``[memory]`` events in time order."""
    events = [e for e in prof.profiler.kineto_results.events()
              if e.device_type() == torch.autograd.DeviceType.CPU
              and e.name() == '[memory]']
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak / 2**20, live / 2**20


def profile_ops(step: Step, x: torch.Tensor, top: int) -> str:
    """Operator profile of one forward and backward (after one warm-up
    step), as text."""
    from torch.profiler import ProfilerActivity, profile
    step(x)  # warm-up and AdamW state
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True,
                 record_shapes=True) as prof:
        forward_backward(step.model, x)
    step.optimizer.zero_grad(set_to_none=True)
    peak, final = allocator_peak(prof)
    table = prof.key_averages()
    lines = [f'CPU allocator peak during forward+backward: {peak:.0f} MiB '
             f'above the start ({final:.0f} MiB left: gradients)']
    lines.append('\ntop operators by self CPU time:')
    lines.append(table.table(sort_by='self_cpu_time_total', row_limit=top,
                             max_name_column_width=48))
    lines.append('\ntop operators by memory allocated (self):')
    lines.append(table.table(sort_by='self_cpu_memory_usage', row_limit=top,
                             max_name_column_width=48))
    return '\n'.join(lines)


# --------------------------------------------------------------------------
# Inference
# --------------------------------------------------------------------------
class _TensorRecorder(TorchDispatchMode):
    """Records the size of every tensor an operator returns."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[int, str, tuple[int, ...]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        outs = out if isinstance(out, (tuple, list)) else (out, )
        inputs = {
            a.untyped_storage().data_ptr()
            for a in (*args, *(kwargs or {}).values())
            if isinstance(a, torch.Tensor)
        }
        for t in outs:
            # Views share their input's storage: not new memory.
            if isinstance(t, torch.Tensor) and (
                    t.untyped_storage().data_ptr() not in inputs):
                self.records.append(
                    (t.numel() * t.element_size(), str(func.__name__),
                     tuple(t.shape)))
        return out


def profile_model(name: str, size: Sequence[int], warmup: int,
                  repeats: int, top: int) -> dict:
    """Profile one model of the edge table; see the module docstring.

    Returns:
        dict: ``model``, ``size``, ``threads``, ``wall_ms``,
        ``profiled_wall_ms``, ``op_self_ms``, ``op_calls``,
        ``python_overhead_ms``, ``python_overhead_share``, ``top_ops``,
        ``produced_mib``, ``largest_tensors``.
    """
    model, scope = edge_table.build_classifier(name)
    forward = tensor_forward(scope)
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for _ in range(warmup):
            forward(model, x)
        walls = []
        for _ in range(repeats):
            start = time.perf_counter()
            forward(model, x)
            walls.append(time.perf_counter() - start)
        with torch.profiler.profile(
                activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            for _ in range(repeats):
                forward(model, x)
            profiled_ms = (time.perf_counter() - start) * 1e3 / repeats
        recorder = _TensorRecorder()
        with recorder:
            forward(model, x)

    events = prof.key_averages()
    ops = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)
    self_ms = sum(e.self_cpu_time_total for e in events) / 1e3 / repeats
    calls = sum(e.count for e in events) / repeats
    wall_ms = statistics.median(walls) * 1e3
    records = sorted(recorder.records, reverse=True)
    return dict(
        model=name,
        size=list(size),
        threads=torch.get_num_threads(),
        wall_ms=wall_ms,
        profiled_wall_ms=profiled_ms,
        op_self_ms=self_ms,
        op_calls=calls,
        python_overhead_ms=profiled_ms - self_ms,
        python_overhead_share=(profiled_ms - self_ms) / profiled_ms,
        top_ops=[
            dict(op=e.key,
                 self_ms=e.self_cpu_time_total / 1e3 / repeats,
                 share=e.self_cpu_time_total / 1e3 / repeats / self_ms,
                 calls=e.count / repeats) for e in ops[:top]
        ],
        produced_mib=sum(r[0] for r in records) / 2**20,
        largest_tensors=[
            dict(mib=b / 2**20, op=op, shape=list(shape))
            for b, op, shape in records[:top]
        ])


def format_profile(p: dict) -> str:
    """:func:`profile_model`'s result as text."""
    lines = [
        f'\n{p["model"]} at {p["size"][0]}x{p["size"][1]}, batch 1, '
        f'{p["threads"]} threads: wall {p["wall_ms"]:.1f} ms (profiled '
        f'{p["profiled_wall_ms"]:.1f} ms), operators\' self time '
        f'{p["op_self_ms"]:.1f} ms in {p["op_calls"]:.0f} calls, outside '
        f'operators {p["python_overhead_ms"]:.1f} ms '
        f'({100 * p["python_overhead_share"]:.0f} % of the profiled wall)',
        f'  {"operator":<44}{"self ms":>9}{"share":>7}{"calls":>7}'
    ]
    for op in p['top_ops']:
        lines.append(f'  {op["op"]:<44}{op["self_ms"]:>9.2f}'
                     f'{100 * op["share"]:>6.1f}%{op["calls"]:>7.0f}')
    lines.append(f'  largest tensors produced (of {p["produced_mib"]:.0f} '
                 'MiB produced in one call):')
    for t in p['largest_tensors']:
        lines.append(f'  {t["mib"]:>8.2f} MiB  {t["op"]:<28} {t["shape"]}')
    return '\n'.join(lines)


# --------------------------------------------------------------------------
# Command lines
# --------------------------------------------------------------------------
def parse_train_step_args(argv: Sequence[str] | None = None
                          ) -> argparse.Namespace:
    """The options of ``tools/analysis_tools/profile_train_step.py``."""
    p = argparse.ArgumentParser(
        description='Saved activations (saved) or an operator profile (ops) '
        'of one training step of a dense backbone.')
    p.add_argument('command', choices=('saved', 'ops'))
    p.add_argument('models', nargs='*', default=list(TRAIN_MODELS),
                   choices=TRAIN_MODELS, metavar='MODEL',
                   help=f'from {", ".join(TRAIN_MODELS)} (default: both)')
    p.add_argument('--size', type=int, nargs=2, default=[512, 512],
                   metavar=('H', 'W'))
    p.add_argument('--batch', type=int, default=2)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--with-cp', choices=('no', 'yes', 'both'), default='no')
    p.add_argument('--top', type=int, default=25)
    return p.parse_args(argv)


def main_train_step(argv: Sequence[str] | None = None) -> int:
    """The command line of ``tools/analysis_tools/profile_train_step.py``."""
    args = parse_train_step_args(argv)
    torch.set_num_threads(args.threads)
    x = images(args.batch, args.size)
    cps = dict(no=[False], yes=[True], both=[False, True])[args.with_cp]
    print(f'# {args.command} {args.models} batch {args.batch} size '
          f'{args.size} threads {args.threads} load {os.getloadavg()}',
          flush=True)
    for name in args.models:
        for with_cp in cps:
            model = build_training(name, with_cp)
            print(f'\n## {name} with_cp={with_cp}')
            if args.command == 'saved':
                print(report_saved(saved_activations(model, x), args.top))
            else:
                print(profile_ops(Step(model), x, args.top))
    return 0


def parse_inference_args(argv: Sequence[str] | None = None
                         ) -> argparse.Namespace:
    """The options of ``tools/analysis_tools/profile_inference.py``."""
    parser = argparse.ArgumentParser(
        description='Top operators, Python overhead and largest tensors of '
        'edge-table classifiers at batch 1.')
    parser.add_argument('models', nargs='+',
                        help=f'from {", ".join(edge_table.EDGE_MODELS)}')
    parser.add_argument('--size', type=int, nargs=2, default=[224, 224],
                        metavar=('H', 'W'))
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--top', type=int, default=12)
    parser.add_argument('--json', default=None)
    args = parser.parse_args(argv)
    unknown = [m for m in args.models if m not in edge_table.EDGE_MODELS]
    if unknown:
        parser.error(f'unknown model(s) {unknown}; choose from '
                     f'{", ".join(edge_table.EDGE_MODELS)}')
    if args.repeats < 1 or args.warmup < 0 or args.top < 1:
        parser.error('--repeats and --top must be >= 1, --warmup >= 0')
    return args


def main_inference(argv: Sequence[str] | None = None) -> int:
    """The command line of ``tools/analysis_tools/profile_inference.py``."""
    args = parse_inference_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    for name in args.models:
        result = profile_model(name, args.size, args.warmup, args.repeats,
                               args.top)
        print(format_profile(result), flush=True)
        results.append(result)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1))
        print(f'\nwrote {args.json}')
    return 0
