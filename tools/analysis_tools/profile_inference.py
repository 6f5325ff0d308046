#!/usr/bin/env python3
"""Where inference time and memory go, for the edge-table classifiers.

For each model (names of ``benchmark.py --table edge``: ``fcaformer-l1``,
``fcaformer-l2-deploy``, ``convnext-t``...), at batch 1, in eval mode
without autograd, after ``--warmup`` calls:

wall
    Median wall time of ``--repeats`` plain calls (no profiler).
operators
    ``torch.profiler`` over ``--repeats`` calls: the operators with the
    largest self CPU time (time inside the operator, not in the operators
    it calls), per call; their sum; and the number of operator calls.
Python overhead
    The wall time of the profiled calls minus the summed self CPU time of
    all their operators: what the forward spends outside the operators, in
    Python code and in dispatch (an upper bound: the profiler's own cost
    per operator is in it), also as a share of that wall time. Both come
    from the same calls, so a change of machine load between the plain and
    the profiled calls does not enter.
largest tensors
    The largest tensors that operators produce during one call (recorded
    by a ``TorchDispatchMode``), with their operators and shapes, and the
    total bytes produced.

Example:
    python tools/analysis_tools/profile_inference.py fcaformer-l1 \\
        fcaformer-l2 convnext-t --threads 2 --json profile.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fcaformer_mm.models.utils import current_options, execution_options
from fcaformer_mm.utils import edge_table
from fcaformer_mm.utils.model_builder import tensor_forward


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
                  repeats: int, top: int, onednn_linear: bool = False) -> dict:
    """Profile one model of the edge table; see the module docstring."""
    model, scope = edge_table.build_classifier(name)
    with execution_options(onednn_linear=onednn_linear):
        return _profile(name, model, tensor_forward(scope), size, warmup,
                        repeats, top)


def _profile(name: str, model: torch.nn.Module, forward, size, warmup: int,
             repeats: int, top: int) -> dict:
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
        onednn_linear=current_options().onednn_linear,
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


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
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
    parser.add_argument(
        '--onednn-linear', action='store_true',
        help="FcaFormer's inference linears on oneDNN instead of F.linear")
    parser.add_argument('--json', default=None)
    args = parser.parse_args(argv)
    unknown = [m for m in args.models if m not in edge_table.EDGE_MODELS]
    if unknown:
        parser.error(f'unknown model(s) {unknown}; choose from '
                     f'{", ".join(edge_table.EDGE_MODELS)}')
    if args.repeats < 1 or args.warmup < 0 or args.top < 1:
        parser.error('--repeats and --top must be >= 1, --warmup >= 0')
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    for name in args.models:
        result = profile_model(name, args.size, args.warmup, args.repeats,
                               args.top, args.onednn_linear)
        print(format_profile(result), flush=True)
        results.append(result)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1))
        print(f'\nwrote {args.json}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
