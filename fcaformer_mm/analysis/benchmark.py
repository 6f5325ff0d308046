"""Speed and memory of FcaFormer against ConvNeXt-T and Swin-T, in one run.

Measured for each model, all models interleaved (round-robin within every
repetition, so that a change of machine load affects all of them alike):

latency
    Inference time of one image (batch 1), eval mode, no autograd.
throughput
    Inference time of a batch of ``--batch`` images; images per second.
train
    One training step on ``--train-batch`` images: forward, backward of the
    sum of the output means (backbones), of the model's losses (whole
    models) or of the cross-entropy of the class scores against fixed
    random labels (edge-table classifiers), AdamW step.
compiled
    Latency of ``torch.compile(model)`` (with ``--compile-freezing``, under
    inductor's ``freezing``, which treats the weights as constants: folds
    the BatchNorms, packs the weights for oneDNN on the CPU; inference only;
    the compilation time is reported apart and not counted).
memory
    Peak memory of one training step (the ``train`` step above), also with
    ``with_cp=True`` (on every model that has it), each in a fresh process
    that builds the model and runs one untimed step first (so that AdamW's
    state and the gradients' first allocation are not counted as the
    step's). On the CPU: the rise of the peak resident set size during the
    second step over the resident set just before it (``VmHWM``, reset
    through ``/proc/self/clear_refs``, after freed heap is given back with
    ``malloc_trim``; :mod:`fcaformer_mm.analysis.rss`): activations kept for
    the backward pass, gradients, workspace and the allocator's caches,
    not the weights or AdamW's state. On CUDA:
    ``torch.cuda.max_memory_allocated`` above what is allocated before the
    step. The table gives the ratio to ``--reference`` (same ``with_cp``
    and precision).
train-memory
    (``--table edge``) The ``memory`` above for the classifiers (no
    ``with_cp``; not the ``-deploy`` variants).

Every timing is done in fp32 and in mixed precision (``--precisions``:
``bf16`` is autocast on CPU or GPU, ``fp16`` autocast with a gradient
scaler, CUDA only), after ``--warmup`` untimed calls, and summarised by its
median and minimum over ``--repeats`` calls; ratios are medians over the
median of the reference model (``--reference``, ConvNeXt-T by default) and,
when it is measured, of the official FcaFormer.

Models (``--models``):

``fcaformer``
    This package's ``FcaFormer`` L2 dense backbone (the official dense
    configuration: outputs of widths 96, 192, 384, 768).
``fcaformer-deploy``
    The same after ``switch_to_deploy()`` (inference only).
``official``
    The official ``FcaFormer_SH_512`` L2, loaded from a local checkout of
    ``hkzhang-git/FcaFormer`` given by ``--official-path`` (its
    ``semantic-segmentation/backbone/fcaformer.py``, loaded by
    ``fcaformer_mm.analysis.official.load_official_dense`` with stand-ins for
    the mmcv 1.x, mmseg 0.x and timm helpers it imports); left out without
    that option.
``convnext-t``, ``swin-t``
    mmpretrain's ConvNeXt-T and Swin-T, all four stages out.

The backbones get the drop path and layer scale of their UperNet ADE20K
configs (:data:`UPERNET_BACKBONE`: FcaFormer 0.1 and 1.0 as in
``configs/upernet_fcaformer_l2_ade20k.py``, ConvNeXt-T 0.4 and 1.0, Swin-T
0.3, as in mmseg's configs); both act in training only, so the training
metrics measure the backbones as UperNet trains them, and the inference
metrics are unchanged. Whole models (``--configs``) take the drop path of
the config.

``--arch`` (``l1``..``l4``, default ``l2``) sets the FcaFormer arch of
``fcaformer`` and ``fcaformer-deploy`` (outputs of
widths 96, 192, 384, 768 for every arch, as in the official L2 dense
configs, so that the same necks and heads fit).

With ``--configs``, whole models are built from the configs as well (in
their default scope, tensor path: ``_forward``) and the backbone is swapped
for each of the other models under the same neck and heads (all give the
widths 96, 192, 384, 768). Training steps of whole models are supported for
mmseg segmentors (random labels).

The paper's edge-device table (``--table edge``)
    1000-way ImageNet classifiers at batch 1, 224x224 by default
    (:mod:`fcaformer_mm.analysis.edge_table`): FcaFormer-L1..L4 eager
    (``fcaformer-l1``...) and after ``switch_to_deploy()``
    (``fcaformer-l1-deploy``...), ConvNeXt-T/S/B/L, Swin-T/S/B and
    EfficientFormer-L1/L3/L7 from mmpretrain's configs. Metrics: ``latency``
    (and ``throughput``, ``compiled``, ``train``, ``train-memory``) as
    above, and ``memory``, here the inference memory, in a fresh process
    per model (CPU only): weights plus activations, the paper's unit, and
    the rise of the fresh process's peak resident set
    (:func:`fcaformer_mm.analysis.edge_table.measure_inference_memory`).
    The table prints the medians and memory, their ratios to
    ``--reference``, the paper's ARM figures and ratios beside them, and
    the pairs L1/ConvNeXt-T, L2/ConvNeXt-T, L3/ConvNeXt-S, L4/ConvNeXt-B
    with the paper's ratios and the MAC ratio; ``--plot`` draws published
    top-1 against measured latency.

``--runtime`` (``eager``, ``ort``, ``compile``) chooses what runs the
latency and throughput metrics (:mod:`fcaformer_mm.analysis.runtimes`):
eager PyTorch, ONNX Runtime (fp32, CPU) or ``torch.compile`` under
inductor's freezing; export and compilation happen before the timed
round-robin and are reported apart (``prepare_s``), with the largest
difference from the eager output.

OpenMP's wait policy moves the ratios, most for models of many small
operators (FcaFormer runs twice as many as ConvNeXt): on a quiet machine
leave it as it is (threads spin between operators, as in a user's
process); on a CPU whose cores are shared with other work, start the tool
with ``OMP_WAIT_POLICY=PASSIVE``, as spinning threads then wait for peers
the scheduler took away, but know that every operator then pays a thread
wake-up (on a quiet 2-vCPU VM it made FcaFormer-L1 eager 44 ms instead of
26, ConvNeXt-T 72 instead of 54). The report records the variable
(``meta.machine_before.env``).

Examples:
    python tools/analysis_tools/benchmark.py --device cpu --threads 2 \\
        --size 512 512 --repeats 7 --json bench.json --plot bench.png
    python tools/analysis_tools/benchmark.py --table edge --threads 4 \\
        --repeats 15 --json edge.json --plot edge.png
    python tools/analysis_tools/benchmark.py --device cpu --threads 2 \\
        --official-path /path/to/FcaFormer \\
        --configs configs/upernet_fcaformer_l2_ade20k.py \\
        --metrics latency train
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from . import edge_table
from .models import (
    MODEL_NAMES,
    OfficialBackbone,
    Subject,
    build_backbone,
    build_whole,
    images,
)
from .official import load_official_dense
from .rss import peak_rss_rise
from .runtimes import RUNTIMES, make_runner

__all__ = [
    'DEFAULT_MODELS', 'METRICS', 'make_subjects', 'time_round_robin',
    'measure_times', 'add_ratios', 'peak_step_memory', 'measure_memory',
    'format_table', 'parse_args', 'run', 'main'
]

#: Measured unless ``--models`` says otherwise (``official`` only with
#: ``--official-path``).
DEFAULT_MODELS = MODEL_NAMES
METRICS = ('latency', 'throughput', 'train', 'compiled', 'memory',
           'train-memory')
TABLES = ('dense', 'edge')
#: Models of ``--table edge`` (classifiers), and the default set.
EDGE_MODEL_NAMES = tuple(edge_table.EDGE_MODELS)
ARCHS = ('l1', 'l2', 'l3', 'l4')
PRECISIONS = ('fp32', 'bf16', 'fp16')


def make_subjects(args: argparse.Namespace) -> list[Subject]:
    """The models of ``args`` (edge classifiers; or backbones, then each
    ``--configs`` model with each backbone), on ``args.device``."""
    if args.table == 'edge':
        return [
            Subject(name, name, model.to(args.device), scope)
            for name in args.models
            for model, scope in [edge_table.build_classifier(name)]
        ]
    subjects = []
    sources: list[tuple[str | None, str]] = [(None, 'backbone')]
    sources += [(c, Path(c).stem) for c in args.configs]
    for config, where in sources:
        for name in args.models:
            if config is None:
                label = name
                model, scope = build_backbone(name, arch=args.arch), None
            else:
                label = f'{where}/{name}'
                model, scope = build_whole(config, name, arch=args.arch)
            subjects.append(
                Subject(label, name, model.to(args.device), scope))
    return subjects


# --------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------
def autocast(device: str, precision: str):
    if precision == 'fp32':
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == 'bf16' else torch.float16
    return torch.autocast(device_type=device, dtype=dtype)


def synchronize(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def _train_step(subject: Subject, x: torch.Tensor, device: str,
                precision: str) -> None:
    model = subject.model
    if subject.optimizer is None:
        subject.optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=1e-6)
        if precision == 'fp16':
            subject.scaler = torch.amp.GradScaler(device)
    with autocast(device, precision):
        loss = subject.loss(x)
    if subject.scaler is not None:
        subject.scaler.scale(loss).backward()
    else:
        loss.backward()
    if subject.scaler is not None:
        subject.scaler.step(subject.optimizer)
        subject.scaler.update()
    else:
        subject.optimizer.step()
    subject.optimizer.zero_grad(set_to_none=True)


def time_round_robin(subjects: Sequence[Subject],
                     call: Callable[[Subject], None], warmup: int,
                     repeats: int, device: str) -> dict[str, list[float]]:
    """Seconds of ``call(subject)``, interleaved over the subjects."""
    for subject in subjects:
        for _ in range(warmup):
            call(subject)
    synchronize(device)
    times: dict[str, list[float]] = {s.label: [] for s in subjects}
    for _ in range(repeats):
        for subject in subjects:
            synchronize(device)
            start = time.perf_counter()
            call(subject)
            synchronize(device)
            times[subject.label].append(time.perf_counter() - start)
    return times


def measure_times(subjects: list[Subject], metric: str, precision: str,
                  args: argparse.Namespace) -> dict[str, dict]:
    device = args.device
    if metric == 'train':
        chosen = [s for s in subjects if s.trainable]
        x = images(args.train_batch, args.size, device)
        for s in chosen:
            s.model.train()
            s.optimizer = s.scaler = None

        runners: dict = {}

        def call(s: Subject) -> None:
            _train_step(s, x, device, precision)

        grad = contextlib.nullcontext()
    else:
        chosen = list(subjects)
        batch = args.batch if metric == 'throughput' else 1
        x = images(batch, args.size, device)
        for s in chosen:
            s.model.eval()
        runners = {}
        if metric != 'compiled' and args.runtime != 'eager':
            for s in chosen:
                print(f'[{time.strftime("%H:%M:%S")}] {args.runtime}: '
                      f'preparing {s.label}', file=sys.stderr, flush=True)
                with autocast(device, precision):
                    runners[s.label] = make_runner(
                        args.runtime, s.model, s.scope, x,
                        args.compile_backend, args.compile_mode)
        for s in chosen:
            if metric == 'compiled' and s.compiled is None:
                s.compiled = torch.compile(
                    s.model,
                    mode=args.compile_mode,
                    backend=args.compile_backend)
                start = time.perf_counter()
                with torch.no_grad(), autocast(device, precision), \
                        _freezing(args.compile_freezing):
                    s.infer(x, compiled=True)
                s.compile_s = time.perf_counter() - start

        if metric == 'compiled':
            # The eager reference runs in the same round-robin, so that
            # the compiled-over-eager ratio sees the same machine load.
            chosen += [
                Subject(f'{s.label} (eager)', s.name, s.model, s.scope)
                for s in subjects if s.name == args.reference
            ]

        def call(s: Subject) -> None:
            with autocast(device, precision):
                if s.label in runners:
                    runners[s.label](x)
                    return
                compiled = metric == 'compiled' and s.compiled is not None
                s.infer(x, compiled=compiled)

        grad = torch.no_grad()
    if not chosen:
        return {}
    with grad:
        times = time_round_robin(chosen, call, args.warmup, args.repeats,
                                 device)
    for s in chosen:
        s.optimizer = s.scaler = None
        s.model.eval()
    batch = args.train_batch if metric == 'train' else (
        args.batch if metric == 'throughput' else 1)
    out = {}
    for s in chosen:
        ms = [t * 1e3 for t in times[s.label]]
        median = statistics.median(ms)
        entry = dict(
            median_ms=median,
            min_ms=min(ms),
            times_ms=ms,
            batch=batch,
            images_per_s=batch / median * 1e3)
        if metric == 'compiled':
            entry['compile_s'] = s.compile_s
        runner = runners.get(s.label) if metric != 'train' else None
        if runner is not None:
            entry.update(runtime=runner.name, prepare_s=runner.prepare_s,
                         max_abs_diff_to_eager=runner.max_abs_diff,
                         max_abs_eager_output=runner.max_abs_output)
        out[s.label] = entry
    return out


@contextlib.contextmanager
def _freezing(enabled: bool):
    """inductor's ``freezing`` while a model is compiled (it is read when
    the graph is compiled; the compiled code keeps it)."""
    import torch._inductor.config as inductor_config
    with inductor_config.patch(freezing=enabled):
        yield


def add_ratios(results: dict[str, dict], reference: str) -> None:
    """``ratio_to_<ref>``: median over the reference's median, per source;
    ``round_ratio_to_<ref>``: the paired ratios of the same round-robin
    rounds (:func:`~fcaformer_mm.analysis.edge_table.round_ratios`)."""
    for label, entry in results.items():
        prefix = label.rsplit('/', 1)[0] + '/' if '/' in label else ''
        for ref in (reference, 'official'):
            ref_entry = results.get(prefix + ref)
            if ref_entry is not None:
                entry[f'ratio_to_{ref}'] = (
                    entry['median_ms'] / ref_entry['median_ms'])
                rounds = edge_table.round_ratios(entry.get('times_ms'),
                                                 ref_entry.get('times_ms'))
                if rounds is not None:
                    entry[f'round_ratio_to_{ref}'] = rounds


def add_eager_ratios(times: dict[str, dict], reference: str) -> None:
    """``ratio_to_<ref>_eager`` of compiled entries: over the eager latency
    of the reference timed in the same round-robin (same precision, same
    source)."""
    for key, results in times.items():
        metric, precision = key.split('/')
        if metric != 'compiled':
            continue
        eager = times.get(f'latency/{precision}', {})
        for label, entry in results.items():
            prefix = label.rsplit('/', 1)[0] + '/' if '/' in label else ''
            ref_entry = results.get(f'{prefix}{reference} (eager)',
                                    eager.get(prefix + reference))
            if ref_entry is not None:
                entry[f'ratio_to_{reference}_eager'] = (
                    entry['median_ms'] / ref_entry['median_ms'])


# --------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------
def peak_step_memory(subject: Subject, batch: int, size: Sequence[int],
                     device: str, precision: str) -> dict:
    """Peak memory of one training step above what was held before it."""
    x = images(batch, size, device)
    subject.model.train()
    if device.startswith('cuda'):
        _train_step(subject, x, device, precision)  # optimizer state
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        _train_step(subject, x, device, precision)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        return dict(peak_mib=(peak - before) / 2**20,
                    peak_total_mib=peak / 2**20, method='cuda_allocator')
    _train_step(subject, x, device, precision)  # optimizer state
    with peak_rss_rise() as mem:
        _train_step(subject, x, device, precision)
    return dict(peak_mib=mem['rise_mib'], peak_total_mib=mem['peak_mib'],
                method='cpu_vmhwm_live_tensors' if os.environ.get(
                    'MALLOC_MMAP_THRESHOLD_') else 'cpu_vmhwm')


def measure_memory(args: argparse.Namespace) -> list[dict]:
    """Peak training memory of every model, with and without with_cp."""
    rows = []
    sources: list[str | None] = [None] + list(args.configs)
    for config in sources:
        for name in args.models:
            if name in ('fcaformer-deploy', 'official') and (
                    name != 'official' or args.official_path is None):
                continue
            for with_cp in (False, True):
                if name == 'official' and with_cp:
                    continue  # the official model has no with_cp
                for precision in args.precisions:
                    row = dict(
                        model=name,
                        source=config or 'backbone',
                        with_cp=with_cp,
                        precision=precision,
                        batch=args.train_batch,
                        size=list(args.size))
                    row.update(_memory_of(dict(
                        kind='train',
                        name=name,
                        config=config,
                        with_cp=with_cp,
                        precision=precision,
                        batch=args.train_batch,
                        size=list(args.size),
                        device=args.device,
                        threads=args.threads,
                        arch=args.arch,
                        official_path=args.official_path)))
                    rows.append(row)
    add_memory_ratios(rows, args.reference)
    return rows


def add_memory_ratios(rows: list[dict], reference: str) -> None:
    """``ratio_to_<reference>``: peak step memory over the reference's,
    of the same source, ``with_cp`` and precision."""
    def key(row):
        return row['source'], row['with_cp'], row['precision']

    refs = {key(r): r for r in rows if r['model'] == reference}
    for row in rows:
        ref = refs.get(key(row))
        if ref is not None and ref.get('peak_mib') and 'peak_mib' in row:
            row[f'ratio_to_{reference}'] = row['peak_mib'] / ref['peak_mib']


def measure_edge_train_memory(args: argparse.Namespace) -> list[dict]:
    """Peak memory of one training step of every edge-table classifier
    but the ``-deploy`` variants (inference only), defined as the dense
    ``memory`` metric (:func:`peak_step_memory`; a fresh process per model
    and precision on the CPU), at ``--train-batch`` images."""
    rows = []
    for name in args.models:
        if name.endswith('-deploy'):
            continue
        for precision in args.precisions:
            print(f'[{time.strftime("%H:%M:%S")}] training memory {name} '
                  f'{precision}', file=sys.stderr, flush=True)
            row = dict(model=name, source='classifier', with_cp=False,
                       precision=precision, batch=args.train_batch,
                       size=list(args.size))
            row.update(_memory_of(dict(
                kind='edge-train',
                name=name,
                precision=precision,
                batch=args.train_batch,
                size=list(args.size),
                device=args.device,
                threads=args.threads)))
            rows.append(row)
    add_memory_ratios(rows, args.reference)
    return rows


#: glibc setting of the training-memory children: every allocation of at
#: least 128 KiB is its own mapping, returned to the system when freed, so
#: that the peak resident set counts live tensors, as
#: ``torch.cuda.max_memory_allocated`` does on CUDA. With glibc's default
#: (a threshold that grows to 32 MiB), freed tensors stay in the heap and
#: the peak also measures how the heap fragments.
LIVE_TENSOR_MALLOC = {'MALLOC_MMAP_THRESHOLD_': '131072'}


def _memory_of(spec: dict) -> dict:
    """One training-step memory measurement (:func:`_step_memory`): in this
    process on CUDA (the allocator's peak is reset before the step), in a
    fresh process on the CPU, which keeps other models' memory out; there
    the peak counts live tensors (:data:`LIVE_TENSOR_MALLOC`)."""
    if spec['device'].startswith('cuda'):
        return _step_memory(spec)
    return _run_child(spec, LIVE_TENSOR_MALLOC)


def _run_child(spec: dict, env_changes: dict | None = None) -> dict:
    """Run one memory measurement in a fresh process (with ``env_changes``
    in its environment); its JSON result."""
    cmd = [
        sys.executable,
        '-m', 'fcaformer_mm.analysis.benchmark', '--memory-child',
        json.dumps(spec)
    ]
    # The child imports this very package, wherever it was imported from.
    root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get('PYTHONPATH')
    env = dict(os.environ,
               PYTHONPATH=root if not path else root + os.pathsep + path,
               **(env_changes or {}))
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                          env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith('{')]
    if proc.returncode != 0 or not lines:
        return dict(error=(proc.stderr or proc.stdout)[-2000:])
    return json.loads(lines[-1])


def measure_inference_memory(args: argparse.Namespace) -> dict[str, dict]:
    """Inference memory of every edge-table model, each in a fresh process
    (:func:`fcaformer_mm.analysis.edge_table.measure_inference_memory`)."""
    if not args.device == 'cpu':
        raise NotImplementedError(
            'inference memory is measured on the CPU only')
    out = {}
    for name in args.models:
        print(f'[{time.strftime("%H:%M:%S")}] inference memory {name}',
              file=sys.stderr, flush=True)
        out[name] = _run_child(
            dict(kind='inference', name=name, size=list(args.size),
                 threads=args.threads))
    return out


def _step_memory(spec: dict) -> dict:
    """Build the model of ``spec`` (``kind`` ``'train'``: a dense backbone,
    or the whole model of ``config``; ``'edge-train'``: an edge-table
    classifier) and measure :func:`peak_step_memory` in this process."""
    name, device = spec['name'], spec['device']
    if spec['kind'] == 'edge-train':
        model, scope = edge_table.build_classifier(name)
    elif spec['config'] is None:
        model = build_backbone(name, spec['with_cp'], spec['arch'])
        scope = None
    else:
        model, scope = build_whole(spec['config'], name, spec['with_cp'],
                                   spec['arch'])
    subject = Subject(name, name, model.to(device), scope)
    params = sum(p.numel() for p in model.parameters())
    try:
        return dict(
            peak_step_memory(subject, spec['batch'], spec['size'], device,
                             spec['precision']),
            params=params)
    finally:
        del subject, model
        if device.startswith('cuda'):
            torch.cuda.empty_cache()


def memory_child_main(spec: str) -> int:
    """One memory measurement in this (fresh) process; prints its JSON."""
    opts = json.loads(spec)
    if opts['threads']:
        torch.set_num_threads(opts['threads'])
    if opts.get('kind') == 'inference':
        result = edge_table.measure_inference_memory(opts['name'],
                                                     opts['size'])
        print(json.dumps(result))
        return 0
    if opts.get('official_path'):
        OfficialBackbone.official_cls = load_official_dense(
            opts['official_path'])
    print(json.dumps(_step_memory(opts)))
    return 0


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------
def _cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux)."""
    with contextlib.suppress(OSError):
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    return platform.processor() or platform.machine()


#: Environment variables that change CPU timings (recorded in the report).
TIMING_ENV = ('OMP_NUM_THREADS', 'OMP_WAIT_POLICY', 'GOMP_SPINCOUNT',
              'KMP_BLOCKTIME', 'MKL_NUM_THREADS', 'ONEDNN_MAX_CPU_ISA')


def machine_state() -> dict:
    state = dict(
        time=time.strftime('%Y-%m-%d %H:%M:%S'),
        cpus=os.cpu_count(),
        env={k: os.environ[k] for k in TIMING_ENV if k in os.environ},
    )
    with contextlib.suppress(OSError):
        state['loadavg'] = list(os.getloadavg())
    return state


def format_table(report: dict) -> str:
    lines = []
    ref = report['meta']['reference']
    for key, results in report['times'].items():
        metric, precision = key.split('/')
        lines.append(f'\n{metric} ({precision}), '
                     f'size {report["meta"]["size"]}')
        head = f'{"model":<44}{"median ms":>11}{"min ms":>10}{"img/s":>9}'
        head += f'{"x " + ref:>14}{"x official":>12}'
        lines.append(head)
        for label, e in results.items():
            r1 = e.get(f'ratio_to_{ref}')
            r2 = e.get('ratio_to_official')
            row = (f'{label:<44}{e["median_ms"]:>11.1f}{e["min_ms"]:>10.1f}'
                   f'{e["images_per_s"]:>9.2f}')
            row += f'{r1:>14.2f}' if r1 is not None else f'{"-":>14}'
            row += f'{r2:>12.2f}' if r2 is not None else f'{"-":>12}'
            rounds = e.get(f'round_ratio_to_{ref}')
            if rounds is not None and label.rsplit('/', 1)[-1] != ref:
                row += (f'  (per round '
                        f'{edge_table.format_round_ratios(rounds)})')
            eager = e.get(f'ratio_to_{ref}_eager')
            if eager is not None:
                row += f'  ({eager:.2f} x eager {ref})'
            if e.get('compile_s') is not None:
                row += f'  (compile {e["compile_s"]:.0f} s)'
            lines.append(row)
    if report.get('memory'):
        lines.append('\npeak training-step memory (MiB above the model and '
                     f'its AdamW state; x {ref}: same with_cp)')
        for m in report['memory']:
            value = (f'{m["peak_mib"]:.0f}'
                     if 'peak_mib' in m else 'error: ' + m['error'][-80:])
            ratio = m.get(f'ratio_to_{ref}')
            if ratio is not None:
                value += f'  x {ref} {ratio:.2f}'
            lines.append(f'{m["source"]}/{m["model"]:<30} with_cp='
                         f'{m["with_cp"]!s:<6}{m["precision"]:<6}'
                         f'batch {m["batch"]}  {value}')
    return '\n'.join(lines)


def plot(report: dict, path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    keys = list(report['times'])
    fig, axes = plt.subplots(
        1, max(len(keys), 1), figsize=(4 * max(len(keys), 1), 4),
        squeeze=False)
    for ax, key in zip(axes[0], keys):
        results = report['times'][key]
        labels = list(results)
        ax.barh(labels, [results[k]['median_ms'] for k in labels])
        ax.set_title(key)
        ax.set_xlabel('median ms')
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The benchmark's options, checked (``parser.error`` on bad ones)."""
    parser = argparse.ArgumentParser(
        description='Benchmark FcaFormer against ConvNeXt-T and Swin-T '
        "(dense backbones), or reproduce the paper's edge-device table of "
        'classifiers (--table edge).')
    parser.add_argument(
        '--table', default='dense', choices=TABLES,
        help='dense: backbones (and --configs whole models); edge: the '
        "paper's edge-device table of 1000-way classifiers")
    parser.add_argument(
        '--models', nargs='+', default=None,
        help=f'models to measure; dense: {", ".join(MODEL_NAMES)} (default: '
        f'all; official only with --official-path); '
        f'edge: {", ".join(EDGE_MODEL_NAMES)} (default: all)')
    parser.add_argument(
        '--arch', default='l2', choices=ARCHS,
        help='FcaFormer arch of the dense fcaformer* models')
    parser.add_argument(
        '--official-path', default=None,
        help='local checkout of hkzhang-git/FcaFormer, to include the '
        'official implementation')
    parser.add_argument(
        '--configs', nargs='*', default=[],
        help='configs of whole models; each is also built with the other '
        'backbones under the same heads')
    parser.add_argument(
        '--metrics', nargs='+', default=None, choices=METRICS,
        help='default: all for dense but train-memory, latency memory for '
        'edge, where memory is inference memory and train-memory the '
        'training step\'s (dense: memory)')
    parser.add_argument(
        '--precisions', nargs='+', default=None, choices=PRECISIONS,
        help='default: fp32 bf16 on CPU, fp32 fp16 bf16 on CUDA; fp32 for '
        'edge')
    parser.add_argument('--device', default='cpu')
    parser.add_argument(
        '--threads', type=int, default=None,
        help='intra-op CPU threads (torch.set_num_threads; the paper used '
        '4)')
    parser.add_argument(
        '--size', type=int, nargs=2, default=None, metavar=('H', 'W'),
        help='image size; default 512 512 (dense), 224 224 (edge)')
    parser.add_argument('--batch', type=int, default=8,
                        help='batch of the throughput metric')
    parser.add_argument('--train-batch', type=int, default=2)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=7)
    parser.add_argument('--reference', default='convnext-t',
                        help='the model ratios are relative to')
    parser.add_argument(
        '--runtime', default='eager', choices=RUNTIMES,
        help='what runs the latency and throughput metrics: eager PyTorch, '
        'ONNX Runtime (ort: exported at the measured shape, fp32, CPU) or '
        'torch.compile under inductor\'s freezing (compile); export and '
        'compilation are done before the timed calls and not counted')
    parser.add_argument('--compile-mode', default=None,
                        help='mode of torch.compile')
    parser.add_argument('--compile-backend', default='inductor',
                        help='backend of torch.compile')
    parser.add_argument(
        '--compile-freezing', action='store_true',
        help="compile under inductor's freezing (weights as constants; the "
        'usual setting for CPU inference)')
    parser.add_argument('--json', default=None, help='write the results')
    parser.add_argument('--plot', default=None, help='write a PNG plot')
    parser.add_argument('--memory-child', default=None,
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child is not None:
        return args
    edge = args.table == 'edge'
    names = EDGE_MODEL_NAMES if edge else MODEL_NAMES
    if args.models is None:
        args.models = list(EDGE_MODEL_NAMES) if edge else [
            m for m in DEFAULT_MODELS
            if m != 'official' or args.official_path is not None
        ]
    unknown = [m for m in args.models if m not in names]
    if unknown:
        parser.error(f'unknown model(s) {unknown} for --table {args.table}; '
                     f'choose from {", ".join(names)}')
    if args.reference not in names:
        parser.error(f'--reference {args.reference!r} is not a model of '
                     f'--table {args.table}; choose from {", ".join(names)}')
    if args.size is None:
        args.size = [224, 224] if edge else [512, 512]
    if args.metrics is None:
        args.metrics = ['latency', 'memory'] if edge else [
            m for m in METRICS if m != 'train-memory']
    if args.precisions is None:
        args.precisions = (['fp32'] if edge else ['fp32', 'bf16']
                           if args.device == 'cpu' else
                           ['fp32', 'fp16', 'bf16'])
    if not edge and 'train-memory' in args.metrics:
        parser.error('--metrics train-memory belongs to --table edge; the '
                     "dense table's training-step memory is --metrics memory")
    if edge:
        if args.configs or args.official_path:
            parser.error('--configs and --official-path belong to --table '
                         'dense; the edge table builds its own classifiers')
        if 'memory' in args.metrics and args.device != 'cpu':
            parser.error('inference memory (--metrics memory) is measured '
                         'on the CPU only; drop it for --device cuda '
                         '(train-memory measures training steps there)')
        fixed = [m for m in args.models if m.startswith('efficientformer')]
        if fixed and list(args.size) != [224, 224]:
            parser.error(f'{fixed} run at 224x224 only (attention biases of '
                         'a fixed 7x7 map): use --size 224 224 or leave '
                         'them out')
    if 'official' in args.models and args.official_path is None:
        parser.error('the official model needs --official-path')
    if 'official' in args.models and args.arch != 'l2':
        parser.error('the official dense model is L2: use --arch l2')
    if args.runtime == 'ort' and (args.device != 'cpu'
                                  or args.precisions != ['fp32']):
        parser.error('--runtime ort runs fp32 on the CPU: use --device cpu '
                     '--precisions fp32')
    if args.runtime != 'eager' and 'compiled' in args.metrics:
        parser.error('--metrics compiled times torch.compile beside eager; '
                     'with --runtime, drop it')
    if 'fp16' in args.precisions and not args.device.startswith('cuda'):
        parser.error('fp16 mixed precision is measured on CUDA only')
    if args.repeats < 1 or args.warmup < 0:
        parser.error('--repeats must be >= 1 and --warmup >= 0')
    return args


def _meta(args: argparse.Namespace) -> dict:
    return dict(
        table=args.table,
        torch=torch.__version__,
        python=platform.python_version(),
        device=args.device,
        device_name=(torch.cuda.get_device_name(args.device)
                     if args.device.startswith('cuda') else _cpu_name()),
        threads=torch.get_num_threads(),
        size=list(args.size),
        batch=args.batch,
        train_batch=args.train_batch,
        warmup=args.warmup,
        repeats=args.repeats,
        reference=args.reference,
        models=list(args.models),
        arch=args.arch,
        configs=list(args.configs),
        metrics=list(args.metrics),
        precisions=list(args.precisions),
        official_path=args.official_path,
        runtime=args.runtime,
        compile=dict(mode=args.compile_mode,
                     backend=args.compile_backend,
                     freezing=args.compile_freezing),
        machine_before=machine_state())


def _time_all(args: argparse.Namespace, report: dict) -> None:
    """Every timed metric, in every precision, into ``report['times']``;
    parameter counts into ``report['params']``."""
    timed = [m for m in args.metrics if m not in ('memory', 'train-memory')]
    if not timed:
        return
    subjects = make_subjects(args)
    report['params'] = {
        s.label: sum(p.numel() for p in s.model.parameters())
        for s in subjects
    }
    for metric in timed:
        for precision in args.precisions:
            print(f'[{time.strftime("%H:%M:%S")}] {metric} {precision}',
                  file=sys.stderr, flush=True)
            results = measure_times(subjects, metric, precision, args)
            add_ratios(results, args.reference)
            report['times'][f'{metric}/{precision}'] = results
    add_eager_ratios(report['times'], args.reference)


def run(args: argparse.Namespace) -> dict:
    """Measure everything ``args`` asks for.

    Returns:
        dict: The report: ``meta``, ``times`` (per ``metric/precision``,
        per model), ``memory`` (rows), and for the edge table
        ``inference_memory`` and ``edge`` (``rows``, ``pairs``).
    """
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.official_path:
        OfficialBackbone.official_cls = load_official_dense(
            args.official_path)
    torch.manual_seed(0)
    report: dict = dict(meta=_meta(args), times={}, memory=[])
    _time_all(args, report)
    if 'memory' in args.metrics:
        if args.table == 'edge':
            report['inference_memory'] = measure_inference_memory(args)
        else:
            report['memory'] = measure_memory(args)
    if 'train-memory' in args.metrics:
        report['memory'] = measure_edge_train_memory(args)
    report['meta']['machine_after'] = machine_state()
    if args.table == 'edge':
        precision = args.precisions[0]
        rows = edge_table.edge_rows(
            report['times'].get(f'latency/{precision}', {}),
            report.get('inference_memory', {}), args.reference)
        report['edge'] = dict(
            precision=precision,
            rows=rows,
            pairs=edge_table.edge_pairs(rows))
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """The command line of ``tools/analysis_tools/benchmark.py``."""
    args = parse_args(argv)
    if args.memory_child is not None:
        return memory_child_main(args.memory_child)
    report = run(args)
    print(format_table(report))
    if args.table == 'edge' and report['edge']['rows']:
        print(edge_table.format_edge_table(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, 'w') as f:
            json.dump(report, f, indent=1)
        print(f'\nwrote {args.json}')
    if args.plot:
        if args.table == 'edge':
            meta = report['meta']
            edge_table.plot_speed_accuracy(
                report['edge']['rows'], args.plot,
                title=f'batch 1, {meta["size"][0]}x{meta["size"][1]}, '
                f'{meta["device_name"]}, {meta["threads"]} threads')
        else:
            plot(report, args.plot)
        print(f'wrote {args.plot}')
    return 0

if __name__ == '__main__':
    sys.exit(main())
