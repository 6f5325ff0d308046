#!/usr/bin/env python3
"""Where time and memory go in one training step of a dense backbone.

The step is what UperNet training asks of the backbone: a batch of images
in training mode (drop path and layer scale of the UperNet configs),
forward, backward of the sum of the output means, then an AdamW step.

Subcommands:

``saved``
    The activations autograd keeps for the backward pass, attributed to the
    module that saved them (grouped by module type and by operator), with
    the largest tensors. Storage shared by several saved tensors is counted
    once.
``ops``
    ``torch.profiler`` (``profile_memory=True``, ``record_shapes=True``) of
    one forward and backward: top operators by self CPU time and by the
    memory they allocate, and the peak of live CPU-allocator bytes.
``blocks``
    FcaFormer's parts one by one (the stem, a ConvNeXt block, a
    ``downsample``, FCA blocks of stages 2 and 3, on the inputs they get in
    the model): forward+backward time (interleaved medians) and the bytes
    kept for the backward pass, with the training kernels and without
    (``fast_training=False``): what each kernel buys.
``grads``
    FcaFormer's outputs and gradients (input and every parameter) on its
    default path, with and without ``with_cp``, against plain training
    (``fast_training=False``) and the reference computation
    (``fast_inference=False``): largest absolute differences.

Peak step memory and step time are measured by ``benchmark.py`` (``--metrics
train memory``; ``fcaformer-plain`` is FcaFormer without its training
kernels), which builds the same backbones.

Models: ``fcaformer`` (this package's L2 dense backbone, outputs of widths
96, 192, 384, 768, drop path 0.1, layer scale 1.0, as in
``configs/upernet_fcaformer_l2_ade20k.py``) and ``convnext-t`` (mmpretrain's
ConvNeXt-T, drop path 0.4, layer scale 1.0, as in mmseg's ConvNeXt-T
UperNet config), built as ``benchmark.py`` builds them
(``UPERNET_BACKBONE``). ``--options`` sets FcaFormer's
:class:`~fcaformer_mm.models.utils.ExecutionOptions` (``key=value``); a
model given as ``fcaformer@key=value,...`` has its own (e.g.
``fcaformer@fast_training=false``: the plain training path, beside the
default one in the same run).

Examples:
    python tools/analysis_tools/profile_train_step.py saved \\
        fcaformer@fast_training=false fcaformer convnext-t
    python tools/analysis_tools/profile_train_step.py ops fcaformer
    python tools/analysis_tools/profile_train_step.py grads --with-cp both
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import importlib.util
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

MODELS = ('fcaformer', 'convnext-t')


@functools.cache
def benchmark_tool():
    """``benchmark.py`` beside this file, as a module."""
    path = Path(__file__).resolve().with_name('benchmark.py')
    spec = importlib.util.spec_from_file_location('fca_benchmark', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build(name: str, with_cp: bool = False) -> nn.Module:
    """The backbone ``name`` as ``benchmark.py`` builds it (the UperNet
    configs' drop path and layer scale, official initialisation), in
    training mode."""
    if name not in MODELS:
        raise ValueError(f'Unknown model {name!r}; choose from {MODELS}.')
    torch.manual_seed(0)
    model = benchmark_tool().build_backbone(name, with_cp)
    model.train()  # mmpretrain's ConvNeXt.train() returns None
    return model


def options_context(pairs: Sequence[str]):
    """``execution_options`` from ``key=value`` strings (FcaFormer only)."""
    if not pairs:
        return contextlib.nullcontext()
    from fcaformer_mm.models.utils import execution_options
    changes = {}
    for pair in pairs:
        key, value = pair.split('=', 1)
        changes[key] = json.loads(value.lower()) if value.lower() in (
            'true', 'false') or value.isdigit() else value
    return execution_options(**changes)


def parse_spec(spec: str, default: Sequence[str]) -> tuple[str, list[str]]:
    """``name`` or ``name@key=value,...`` to the model name and its
    execution options (``default`` for FcaFormer without ``@``)."""
    name, _, opts = spec.partition('@')
    if name not in MODELS:
        raise ValueError(f'Unknown model {name!r}; choose from {MODELS}.')
    if opts:
        return name, opts.split(',')
    return name, list(default) if name == 'fcaformer' else []


def images(batch: int, size: Sequence[int]) -> torch.Tensor:
    return torch.randn(batch, 3, *size,
                       generator=torch.Generator().manual_seed(0))


def forward_backward(model: nn.Module, x: torch.Tensor) -> None:
    loss = sum(o.mean() for o in model(x))
    loss.backward()


class Step:
    """One model's training step: forward, backward, AdamW."""

    def __init__(self, model: nn.Module, options: Sequence[str] = ()) -> None:
        self.model = model
        self.options = options
        self.optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=1e-6)

    def __call__(self, x: torch.Tensor) -> tuple[float, float]:
        """Run it; returns the seconds of forward+backward and of all."""
        start = time.perf_counter()
        with options_context(self.options):
            forward_backward(self.model, x)
        middle = time.perf_counter()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return middle - start, time.perf_counter() - start


# --------------------------------------------------------------------------
# Saved activations
# --------------------------------------------------------------------------
def saved_activations(model: nn.Module, x: torch.Tensor,
                      options: Sequence[str] = ()) -> list[dict]:
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
            with options_context(options):
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


# --------------------------------------------------------------------------
# Operator profile
# --------------------------------------------------------------------------
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
    from torch.profiler import ProfilerActivity, profile
    step(x)  # warm-up and AdamW state
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True,
                 record_shapes=True) as prof:
        with options_context(step.options):
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
# Parts of FcaFormer one by one
# --------------------------------------------------------------------------
BLOCKS = ('patch_embed', 'layer_0.blocks.0', 'layer_0.downsample',
          'layer_1.blocks.0', 'layer_1.downsample', 'layer_2.blocks.0',
          'layer_2.blocks.6', 'layer_3.blocks.1')


def block_inputs(model: nn.Module, x: torch.Tensor,
                 names: Sequence[str]) -> dict[str, tuple]:
    """The positional inputs of the named modules in one forward."""
    inputs, handles = {}, []
    for name in names:
        module = model.get_submodule(name)

        def hook(mod, args, name=name):
            inputs.setdefault(name, tuple(
                a.detach() if isinstance(a, torch.Tensor) else a
                for a in args))

        handles.append(module.register_forward_pre_hook(hook))
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return inputs


def _block_step(module: nn.Module, args: tuple, options: Sequence[str]):
    args = tuple(a.clone().requires_grad_(True) if isinstance(
        a, torch.Tensor) and a.is_floating_point() else a for a in args)
    with options_context(options):
        out = module(*args)
        outs = [o for o in (out if isinstance(out, tuple) else (out, ))
                if o is not None]
        sum(o.float().mean() for o in outs).backward()


def _block_saved(module: nn.Module, args: tuple,
                 options: Sequence[str]) -> int:
    """Bytes autograd keeps for backward in the module's forward (saved
    tensors, once per storage, parameters and inputs excluded)."""
    args = tuple(a.clone().requires_grad_(True) if isinstance(
        a, torch.Tensor) and a.is_floating_point() else a for a in args)
    skip = {p.untyped_storage().data_ptr() for p in module.parameters()}
    skip |= {a.untyped_storage().data_ptr() for a in args
             if isinstance(a, torch.Tensor)}
    seen: dict[int, int] = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in skip:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with options_context(options):
            module(*args)
    return sum(seen.values())


def profile_blocks(args: argparse.Namespace, x: torch.Tensor) -> str:
    model = build('fcaformer')
    inputs = block_inputs(model, x, BLOCKS)
    variants = {'kernels': list(args.options),
                'plain': list(args.options) + ['fast_training=false']}
    times = {(b, v): [] for b in BLOCKS for v in variants}
    for i in range(args.warmup + args.repeats):
        for block in BLOCKS:
            module = model.get_submodule(block)
            for variant, opts in variants.items():
                start = time.perf_counter()
                _block_step(module, inputs[block], opts)
                if i >= args.warmup:
                    times[(block, variant)].append(time.perf_counter() -
                                                   start)
        model.zero_grad(set_to_none=True)
    lines = [f'{"part":<22}{"kernels ms":>11}{"plain ms":>10}{"ratio":>7}'
             f'{"kept MiB":>10}{"plain MiB":>10}']
    for block in BLOCKS:
        module = model.get_submodule(block)
        fast = statistics.median(times[(block, 'kernels')])
        plain = statistics.median(times[(block, 'plain')])
        kept = [_block_saved(module, inputs[block], opts) / 2**20
                for opts in variants.values()]
        lines.append(f'{block:<22}{fast * 1e3:>11.0f}{plain * 1e3:>10.0f}'
                     f'{fast / plain:>7.2f}{kept[0]:>10.1f}{kept[1]:>10.1f}')
    return '\n'.join(lines)


# --------------------------------------------------------------------------
# Gradients against plain training and the reference computation
# --------------------------------------------------------------------------
def step_results(spec: str, x: torch.Tensor, with_cp: bool,
                 default: Sequence[str] = ()) -> dict[str, torch.Tensor]:
    """Outputs, input gradient and parameter gradients of one forward and
    backward of ``sum(mean(out ** 2))`` (drop path drawn from the same
    seed), by name."""
    name, opts = parse_spec(spec, default)
    model = build(name, with_cp)
    x = x.clone().requires_grad_(True)
    torch.manual_seed(1)
    with options_context(opts):
        outs = model(x)
        # Not the mean: each output ends in a LayerNorm whose weights start
        # at 1, so the mean of an output has no gradient before it.
        sum((o * o).mean() for o in outs).backward()
    results = {f'out{i}': o.detach() for i, o in enumerate(outs)}
    results['input'] = x.grad
    results.update({n: p.grad for n, p in model.named_parameters()})
    return results


def _worst(a: dict, b: dict, keys) -> tuple[float, str, float]:
    """Largest absolute difference over ``keys``, where, and the largest
    value of ``b`` there."""
    diff, key = max(((a[k] - b[k]).abs().max().item(), k) for k in keys)
    return diff, key, b[key].abs().max().item()


def compare_grads(x: torch.Tensor, cps: Sequence[bool]) -> str:
    """FcaFormer's default path (the training kernels), with each
    ``with_cp``, against plain training (``fast_training=False``) and the
    reference computation (``fast_inference=False``) without ``with_cp``:
    largest absolute differences of the outputs and of the gradients."""
    baselines = {
        'plain training': step_results('fcaformer@fast_training=false', x,
                                       False),
        'reference path': step_results('fcaformer@fast_inference=false', x,
                                       False),
    }
    lines = []
    for with_cp in cps:
        fast = step_results('fcaformer', x, with_cp)
        for label, base in baselines.items():
            assert fast.keys() == base.keys()
            outs = [k for k in base if k.startswith('out')]
            grads = [k for k in base if k not in outs]
            out_diff = _worst(fast, base, outs)
            grad_diff = _worst(fast, base, grads)
            largest = max(base[k].abs().max().item() for k in grads)
            lines.append(
                f'fcaformer with_cp={with_cp} against {label}: outputs max '
                f'abs diff {out_diff[0]:.3g} ({out_diff[1]}, largest value '
                f'{out_diff[2]:.3g}); gradients max abs diff '
                f'{grad_diff[0]:.3g} ({grad_diff[1]}, largest value there '
                f'{grad_diff[2]:.3g}; largest gradient {largest:.3g}); '
                f'{len(grads)} gradients')
    return '\n'.join(lines)


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('command', choices=('saved', 'ops', 'blocks', 'grads'))
    p.add_argument('models', nargs='*', default=list(MODELS),
                   help=f'{MODELS}, FcaFormer as fcaformer@key=value,... '
                   'with execution options of its own')
    p.add_argument('--size', type=int, nargs=2, default=[512, 512])
    p.add_argument('--batch', type=int, default=2)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--with-cp', choices=('no', 'yes', 'both'), default='no')
    p.add_argument('--options', nargs='*', default=[],
                   help='FcaFormer execution options, key=value')
    p.add_argument('--repeats', type=int, default=7)
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--top', type=int, default=25)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    x = images(args.batch, args.size)
    cps = dict(no=[False], yes=[True], both=[False, True])[args.with_cp]
    print(f'# {args.command} {args.models} batch {args.batch} size '
          f'{args.size} threads {args.threads} options {args.options} '
          f'load {os.getloadavg()}', flush=True)
    if args.command in ('saved', 'ops'):
        for spec in args.models:
            name, opts = parse_spec(spec, args.options)
            for with_cp in cps:
                model = build(name, with_cp)
                print(f'\n## {spec} with_cp={with_cp}')
                if args.command == 'saved':
                    print(report_saved(
                        saved_activations(model, x, opts), args.top))
                else:
                    print(profile_ops(Step(model, opts), x, args.top))
    elif args.command == 'blocks':
        print(profile_blocks(args, x))
        print(f'# load after {os.getloadavg()}')
    elif args.command == 'grads':
        print(compare_grads(x, cps))
    return 0


if __name__ == '__main__':
    sys.exit(main())
