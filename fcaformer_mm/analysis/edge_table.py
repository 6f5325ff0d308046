"""The paper's edge-device table: its models as 1000-way classifiers, the
published figures beside them, and the inference memory the benchmark
measures.

The paper (official README) gives latency and memory of FcaFormer-L1..L4,
ConvNeXt-T/S/B/L and Swin-T/S/B on an ARM quad Cortex-A17: batch 1,
224x224, four threads; it does not say how memory was measured. Here every
model is an OpenMMLab classifier built from its config (no weights are
loaded: random weights run as fast as trained ones):

- FcaFormer-L1..L4: this repository's ``configs/fcaformer_l<N>_in1k.py``
  (``FcaFormer(out_type='avg_featmap')`` and a 1000-way ``LinearClsHead``),
  eager, and after ``switch_to_deploy()`` (``fcaformer-l<N>-deploy``);
- ConvNeXt, Swin Transformer and EfficientFormer: mmpretrain's own configs
  of its ImageNet-1k models.

**Inference memory** is measured in a fresh process per model, two ways
(:func:`measure_inference_memory`, :mod:`fcaformer_mm.analysis.rss`): in
the paper's unit, weights plus activations (the resident rise over building
the model and one forward, measured on a second build after a first model
of the same kind ran and was freed), and beside it the rise of the fresh
process's peak over the first build and forward, which also counts about
20 MiB of kernel code and runtime start-up whatever the model.

Example:
    >>> from fcaformer_mm.analysis.edge_table import EDGE_MODELS, pairs_of
    >>> row = EDGE_MODELS['fcaformer-l2']
    >>> row.paper_ms, row.paper_mem, row.peer
    (728.0, 95.0, 'convnext-t')
    >>> [f'{a}/{b}' for a, b in pairs_of(['fcaformer-l3', 'convnext-s'])]
    ['fcaformer-l3/convnext-s']
"""
from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from fcaformer_mm.utils.model_builder import (
    build_model_from_config,
    tensor_forward,
)

from .models import quiet_logs
from .rss import release_free_heap, reset_peak_rss, status_kib

__all__ = [
    'EdgeModel', 'EDGE_MODELS', 'FAMILIES', 'pairs_of',
    'mmpretrain_config_dir', 'classifier_config',
    'build_classifier', 'measure_inference_memory', 'edge_rows',
    'edge_pairs', 'format_edge_table', 'plot_speed_accuracy'
]

#: The repository's configs (FcaFormer classifiers).
CONFIG_DIR = Path(__file__).resolve().parents[2] / 'configs'


@dataclasses.dataclass(frozen=True)
class EdgeModel:
    """One row of the edge-device table.

    Args:
        name (str): Name on the command line, e.g. ``'fcaformer-l1'``.
        label (str): Name in tables and plots, e.g. ``'FcaFormer-L1'``.
        family (str): Line of the speed-accuracy plot.
        config (str): The classifier's config: a file of this repository's
            ``configs/`` or an ``mmpretrain::`` path.
        top1 (float): Published ImageNet-1k top-1 (%).
        gmacs (float): Published multiply-adds at 224x224 (G).
        paper_ms (float, optional): The paper's ARM latency (ms).
        paper_mem (float, optional): The paper's ARM memory ("M").
        peer (str, optional): The model it is compared with in the pair
            table (issue 12: L1 and L2 with ConvNeXt-T, L3 with ConvNeXt-S,
            L4 with ConvNeXt-B).
        deploy (bool): Call ``backbone.switch_to_deploy()`` after building.
        top1_source (str): Where ``top1`` comes from.
    """

    name: str
    label: str
    family: str
    config: str
    top1: float
    gmacs: float
    paper_ms: float | None = None
    paper_mem: float | None = None
    peer: str | None = None
    deploy: bool = False
    top1_source: str = 'FcaFormer paper'


def _fcaformer(level: int, top1: float, gmacs: float, ms: float, mem: float,
               peer: str) -> list[EdgeModel]:
    base = EdgeModel(
        name=f'fcaformer-l{level}',
        label=f'FcaFormer-L{level}',
        family='FcaFormer',
        config=f'fcaformer_l{level}_in1k.py',
        top1=top1,
        gmacs=gmacs,
        paper_ms=ms,
        paper_mem=mem,
        peer=peer)
    deployed = dataclasses.replace(
        base,
        name=f'{base.name}-deploy',
        label=f'{base.label} deployed',
        family='FcaFormer deployed',
        deploy=True)
    return [base, deployed]


def _peer(name: str, label: str, family: str, config: str, top1: float,
          gmacs: float, ms: float | None = None, mem: float | None = None,
          top1_source: str = 'FcaFormer paper') -> EdgeModel:
    return EdgeModel(name, label, family, 'mmpretrain::' + config, top1,
                     gmacs, ms, mem, top1_source=top1_source)


_MMPRETRAIN_METAFILE = 'mmpretrain metafile'

#: Every model of the table, by command-line name. Latency (ms) and memory
#: (M) of the paper's ARM table; top-1 as published in the FcaFormer paper
#: (EfficientFormer: mmpretrain's metafile, whose configs are built); MACs
#: as published (FcaFormer: the paper; ConvNeXt, Swin: their papers;
#: EfficientFormer: mmpretrain's metafile).
EDGE_MODELS: dict[str, EdgeModel] = {
    m.name: m
    for m in [
        *_fcaformer(1, 80.3, 1.4, 312., 42., 'convnext-t'),
        *_fcaformer(2, 83.1, 3.6, 728., 95., 'convnext-t'),
        *_fcaformer(3, 84.2, 6.7, 1344., 148., 'convnext-s'),
        *_fcaformer(4, 84.9, 14.5, 2624., 328., 'convnext-b'),
        _peer('convnext-t', 'ConvNeXt-T', 'ConvNeXt',
              'convnext/convnext-tiny_32xb128_in1k.py', 82.1, 4.5, 875.,
              129.),
        _peer('convnext-s', 'ConvNeXt-S', 'ConvNeXt',
              'convnext/convnext-small_32xb128_in1k.py', 83.1, 8.7, 1618.,
              211.),
        _peer('convnext-b', 'ConvNeXt-B', 'ConvNeXt',
              'convnext/convnext-base_32xb128_in1k.py', 83.8, 15.4, 2708.,
              364.),
        _peer('convnext-l', 'ConvNeXt-L', 'ConvNeXt',
              'convnext/convnext-large_64xb64_in1k.py', 84.3, 34.4, 5604.,
              764.),
        _peer('swin-t', 'Swin-T', 'Swin', 'swin_transformer/'
              'swin-tiny_16xb64_in1k.py', 81.3, 4.5, 588., 139.),
        _peer('swin-s', 'Swin-S', 'Swin', 'swin_transformer/'
              'swin-small_16xb64_in1k.py', 83.0, 8.7, 1576., 222.),
        _peer('swin-b', 'Swin-B', 'Swin', 'swin_transformer/'
              'swin-base_16xb64_in1k.py', 83.5, 15.4, 2624., 378.),
        _peer('efficientformer-l1', 'EfficientFormer-L1', 'EfficientFormer',
              'efficientformer/efficientformer-l1_8xb128_in1k.py', 80.46,
              1.3, top1_source=_MMPRETRAIN_METAFILE),
        _peer('efficientformer-l3', 'EfficientFormer-L3', 'EfficientFormer',
              'efficientformer/efficientformer-l3_8xb128_in1k.py', 82.45,
              3.7, top1_source=_MMPRETRAIN_METAFILE),
        _peer('efficientformer-l7', 'EfficientFormer-L7', 'EfficientFormer',
              'efficientformer/efficientformer-l7_8xb128_in1k.py', 83.40,
              10.2, top1_source=_MMPRETRAIN_METAFILE),
    ]
}

#: Families in plot order.
FAMILIES = ('FcaFormer', 'FcaFormer deployed', 'ConvNeXt', 'Swin',
            'EfficientFormer')


def pairs_of(names: Iterable[str]) -> list[tuple[str, str]]:
    """The (FcaFormer, peer) pairs of the issue's table among ``names``.

    Args:
        names (Iterable[str]): Measured models.

    Returns:
        list[tuple[str, str]]: Pairs whose two models are both in ``names``,
        in the order of ``names``.
    """
    names = list(names)
    return [(n, EDGE_MODELS[n].peer) for n in names
            if n in EDGE_MODELS and EDGE_MODELS[n].peer in names]


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def round_ratios(times: Sequence[float] | None,
                 ref_times: Sequence[float] | None) -> dict | None:
    """Per-round ratios of two models timed in the same round-robin.

    Round ``i`` times each model once, one after the other, so the ratio of
    the two ``i``-th times is taken under the same machine load; the median
    of these paired ratios moves less than the ratio of the medians when the
    load drifts, and their spread shows how far one run can be trusted.

    Args:
        times (Sequence[float], optional): A model's times, round by round.
        ref_times (Sequence[float], optional): The reference's times of the
            same rounds.

    Returns:
        dict | None: ``median``, ``min`` and ``max`` of the paired ratios,
        and ``rounds``; None when either is missing or their lengths differ
        (not timed in the same rounds).
    """
    if not times or not ref_times or len(times) != len(ref_times):
        return None
    ratios = [a / b for a, b in zip(times, ref_times)]
    return dict(median=statistics.median(ratios), min=min(ratios),
                max=max(ratios), rounds=len(ratios))


def format_round_ratios(rounds: Mapping) -> str:
    """:func:`round_ratios`' result as ``median [min-max]``."""
    return (f'{rounds["median"]:.2f} [{rounds["min"]:.2f}-'
            f'{rounds["max"]:.2f}]')


def mmpretrain_config_dir() -> Path:
    """The configs (and metafiles) of the installed mmpretrain, which
    ``mmpretrain::`` config paths point into."""
    from mmengine.utils import get_installed_path

    return Path(get_installed_path('mmpretrain')) / '.mim' / 'configs'


def classifier_config(name: str):
    """The :class:`mmengine.config.Config` of a model of the table.

    Swin models get ``pad_small_map=True``, which changes nothing at
    224x224 and lets them run on the small images of tests.

    Raises:
        KeyError: For a name not in :data:`EDGE_MODELS`.
    """
    from mmengine.config import Config

    if name not in EDGE_MODELS:
        raise KeyError(f'Unknown model {name!r}; choose from '
                       f'{tuple(EDGE_MODELS)}.')
    model = EDGE_MODELS[name]
    if model.config.startswith('mmpretrain::'):
        path = mmpretrain_config_dir() / model.config.split('::', 1)[1]
    else:
        path = CONFIG_DIR / model.config
    cfg = Config.fromfile(str(path))
    if model.family == 'Swin':
        cfg.model.backbone.pad_small_map = True
    return cfg


def build_classifier(name: str, cfg=None) -> tuple[nn.Module, str]:
    """Build a model of the table, initialised, in eval mode (deployed for
    the ``-deploy`` variants).

    Args:
        name (str): A key of :data:`EDGE_MODELS`.
        cfg (Config, optional): Its config, if already read
            (:func:`classifier_config`). Defaults to None.

    Returns:
        tuple[nn.Module, str]: The classifier and its default scope
        (``'mmpretrain'``); its tensor path
        (:func:`~fcaformer_mm.utils.model_builder.tensor_forward`) gives the
        1000 class scores.
    """
    if cfg is None:
        cfg = classifier_config(name)
    model, scope = build_model_from_config(cfg)
    with quiet_logs():
        model.init_weights()
    model.eval()
    if EDGE_MODELS[name].deploy:
        model.backbone.switch_to_deploy()
    return model, scope


def _prepare_process() -> None:
    """Load what every model needs before the memory baseline: the hosts'
    registries and the CPU thread pool."""
    import mmpretrain.models  # noqa: F401
    from mmengine.registry import MODELS, DefaultScope

    import fcaformer_mm.models  # noqa: F401
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        MODELS.get('ImageClassifier')
    # Start the intra-op thread pool (its stacks are the process's, not a
    # model's).
    a = torch.ones(256, 256)
    (a @ a).sum().item()


def _build_and_run(name: str, cfg, x: torch.Tensor) -> tuple[dict, int]:
    """Build a model of the table and run one forward, measuring the
    resident memory: the rise over the build (what stays resident once the
    builder's freed temporaries are given back) and the peak rise of the
    forward over that."""
    release_free_heap()
    before = status_kib('VmRSS')
    reset = reset_peak_rss()
    model, scope = build_classifier(name, cfg)
    built_peak = status_kib('VmHWM')
    release_free_heap()
    built = status_kib('VmRSS')
    reset_peak_rss()
    with torch.no_grad():
        tensor_forward(scope)(model, x)
    peak = status_kib('VmHWM')
    params = sum(p.numel() for p in model.parameters())
    weights = sum(t.numel() * t.element_size()
                  for t in (*model.parameters(), *model.buffers()))
    del model
    mib = 1 / 1024
    return dict(
        before_mib=before * mib,
        build_peak_mib=built_peak * mib,
        built_mib=built * mib,
        peak_mib=peak * mib,
        weights_mib=weights / 2**20,
        method='vmhwm' if reset else 'vmhwm_no_reset'), params


def measure_inference_memory(name: str,
                             size: Sequence[int] = (224, 224),
                             batch: int = 1) -> dict:
    """Inference memory of one model, two ways, in this (fresh) process.

    The hosts and the thread pool are loaded and the config read first.
    Then the model is built and runs one forward of ``batch`` random images
    without autograd, twice:

    1. **fresh process** (``fresh_process_mib``): the rise of the peak
       resident set over the whole first build and forward. It also
       counts what any first forward touches whatever the model: the
       kernels' code pages, the runtime's start-up allocations (about
       20 MiB), and the builder's temporaries.
    2. **weights and activations** (``memory_mib``, the paper's unit): the
       same model is built again after the first was freed and the freed
       heap given back (``malloc_trim``, ``VmHWM`` reset), so that only
       this model counts: the resident rise over the build once the
       builder's temporaries are given back (``resident_weights_mib``: the
       weights; for ``-deploy`` rows the folded ones only) plus the peak
       rise of the forward over that (``activations_mib``).

    Args:
        name (str): A key of :data:`EDGE_MODELS`.
        size (Sequence[int]): Image height and width. Defaults to
            (224, 224).
        batch (int): Images. Defaults to 1.

    Returns:
        dict: ``memory_mib``, ``resident_weights_mib``, ``activations_mib``,
        ``fresh_process_mib``, ``weights_mib`` (parameters and buffers as
        tensors count them), ``params`` (count), ``method``, and the raw
        readings of both runs (``fresh``, ``warm``).
    """
    _prepare_process()
    cfg = classifier_config(name)
    x = torch.randn(batch, 3, *size,
                    generator=torch.Generator().manual_seed(0))
    fresh, params = _build_and_run(name, cfg, x)
    warm, _ = _build_and_run(name, cfg, x)
    fresh_peak = max(fresh['build_peak_mib'], fresh['peak_mib'])
    resident = max(warm['built_mib'] - warm['before_mib'], 0.)
    activations = max(warm['peak_mib'] - warm['built_mib'], 0.)
    return dict(
        memory_mib=resident + activations,
        resident_weights_mib=resident,
        activations_mib=activations,
        fresh_process_mib=max(fresh_peak - fresh['before_mib'], 0.),
        weights_mib=warm['weights_mib'],
        params=params,
        method=warm['method'],
        fresh=fresh,
        warm=warm)


def edge_rows(latency: Mapping[str, Mapping],
              memory: Mapping[str, Mapping],
              reference: str) -> list[dict]:
    """The table's rows: measured figures beside the paper's.

    Args:
        latency (Mapping): Per model, a timing entry with ``median_ms``
            (the benchmark's ``latency/fp32`` results), or empty.
        memory (Mapping): Per model, :func:`measure_inference_memory`'s
            result (or a dict with ``error``), or empty.
        reference (str): The model that ratios are relative to.

    Returns:
        list[dict]: One dict per model in ``latency`` or ``memory``:
        ``model``, ``label``, ``top1``, ``gmacs``, ``median_ms``,
        ``min_ms``, ``times_ms`` (round by round),
        ``latency_ratio`` (median over the reference's median),
        ``memory_mib`` (weights and activations), ``memory_ratio``,
        ``fresh_process_mib``, ``fresh_process_ratio``, ``paper_ms``,
        ``paper_latency_ratio``, ``paper_mem``, ``paper_memory_ratio``
        (None where not measured or not published).
    """
    names = list(dict.fromkeys([*latency, *memory]))
    ref = EDGE_MODELS[reference]
    ref_ms = latency.get(reference, {}).get('median_ms')
    ref_mib = memory.get(reference, {}).get('memory_mib')
    ref_fresh = memory.get(reference, {}).get('fresh_process_mib')
    rows = []
    for name in names:
        model = EDGE_MODELS[name]
        ms = latency.get(name, {}).get('median_ms')
        mib = memory.get(name, {}).get('memory_mib')
        fresh = memory.get(name, {}).get('fresh_process_mib')
        rows.append(
            dict(
                model=name,
                label=model.label,
                family=model.family,
                top1=model.top1,
                gmacs=model.gmacs,
                median_ms=ms,
                min_ms=latency.get(name, {}).get('min_ms'),
                times_ms=latency.get(name, {}).get('times_ms'),
                latency_ratio=_ratio(ms, ref_ms),
                memory_mib=mib,
                memory_ratio=_ratio(mib, ref_mib),
                fresh_process_mib=fresh,
                fresh_process_ratio=_ratio(fresh, ref_fresh),
                paper_ms=model.paper_ms,
                paper_latency_ratio=_ratio(model.paper_ms, ref.paper_ms),
                paper_mem=model.paper_mem,
                paper_memory_ratio=_ratio(model.paper_mem, ref.paper_mem)))
    return rows


def edge_pairs(rows: Sequence[Mapping]) -> list[dict]:
    """The pair table from :func:`edge_rows`'s rows.

    For each FcaFormer model and its peer (:func:`pairs_of`): the measured
    latency ratio beside the paper's and the MAC ratio (the bound that
    kernels whose time follows their MACs would reach), and the memory
    ratios (weights and activations; fresh process) beside the paper's.
    ``latency_round_ratio`` (:func:`round_ratios`) gives the paired
    per-round ratios beside the ratio of the medians.
    """
    by_name = {r['model']: r for r in rows}
    pairs = []
    for name, peer in pairs_of(by_name):
        a, b = by_name[name], by_name[peer]
        pairs.append(
            dict(
                model=name,
                peer=peer,
                pair=f'{a["label"]} / {b["label"]}',
                latency_ratio=_ratio(a['median_ms'], b['median_ms']),
                latency_round_ratio=round_ratios(a.get('times_ms'),
                                                 b.get('times_ms')),
                paper_latency_ratio=_ratio(a['paper_ms'], b['paper_ms']),
                mac_ratio=a['gmacs'] / b['gmacs'],
                memory_ratio=_ratio(a['memory_mib'], b['memory_mib']),
                fresh_process_ratio=_ratio(a.get('fresh_process_mib'),
                                           b.get('fresh_process_mib')),
                paper_memory_ratio=_ratio(a['paper_mem'], b['paper_mem'])))
    return pairs


def _cell(value, spec: str, width: int) -> str:
    if value is None:
        return f'{"-":>{width}}'
    if isinstance(value, bool):
        return f'{"yes" if value else "NO":>{width}}'
    return f'{value:>{width}{spec}}'


def format_edge_table(report: Mapping) -> str:
    """The edge-device table and the pair table as text.

    Args:
        report (Mapping): The benchmark's report with an ``edge`` entry
            (``rows``, ``pairs``) and its ``meta``.
    """
    meta = report['meta']
    edge = report['edge']
    ref = EDGE_MODELS[meta['reference']].label
    h, w = meta['size']
    runtime = meta.get('runtime', 'eager')
    lines = [
        f'\nEdge-device table: batch 1, {h}x{w}, {meta["device_name"]}, '
        f'{meta["threads"]} threads, {edge["precision"]}, {runtime}; '
        f'latency: median of {meta["repeats"]} interleaved calls; memory: '
        'weights + activations (MiB, the paper\'s unit), and the peak rise '
        'of a fresh process (fresh). Paper: ARM Cortex-A17, 4 threads.',
        f'{"model":<28}{"top-1":>6}{"GMACs":>6}{"ms":>9}{"x ref":>7}'
        f'{"paper ms":>9}{"x ref":>7}{"MiB":>7}{"x ref":>7}'
        f'{"fresh":>7}{"x ref":>7}{"paper M":>8}{"x ref":>7}',
    ]
    for r in edge['rows']:
        lines.append(
            f'{r["label"]:<28}{r["top1"]:>6.1f}{r["gmacs"]:>6.1f}'
            + _cell(r['median_ms'], '.1f', 9)
            + _cell(r['latency_ratio'], '.2f', 7)
            + _cell(r['paper_ms'], '.0f', 9)
            + _cell(r['paper_latency_ratio'], '.2f', 7)
            + _cell(r['memory_mib'], '.0f', 7)
            + _cell(r['memory_ratio'], '.2f', 7)
            + _cell(r.get('fresh_process_mib'), '.0f', 7)
            + _cell(r.get('fresh_process_ratio'), '.2f', 7)
            + _cell(r['paper_mem'], '.0f', 8)
            + _cell(r['paper_memory_ratio'], '.2f', 7))
    lines.append(f'(x ref: over {ref})')
    if edge['pairs']:
        lines += [
            '\nPairs: measured ratio beside the paper\'s; MACs: the MAC '
            'ratio',
            f'{"pair":<40}{"latency":>8}{"paper":>7}{"MACs":>6}'
            f'{"memory":>8}{"paper":>7}{"fresh":>7}'
            '  latency per round: median [min-max]',
        ]
        for p in edge['pairs']:
            rounds = p.get('latency_round_ratio')
            lines.append(
                f'{p["pair"]:<40}' + _cell(p['latency_ratio'], '.2f', 8)
                + _cell(p['paper_latency_ratio'], '.2f', 7)
                + _cell(p['mac_ratio'], '.2f', 6)
                + _cell(p['memory_ratio'], '.2f', 8)
                + _cell(p['paper_memory_ratio'], '.2f', 7)
                + _cell(p.get('fresh_process_ratio'), '.2f', 7)
                + ('' if rounds is None else
                   f'  {format_round_ratios(rounds)}'))
        lines.append('(latency: ratio of the medians; per round: the ratios '
                     'of the times of each round-robin round)')
    errors = {k: v['error'] for k, v in report.get(
        'inference_memory', {}).items() if 'error' in v}
    for name, error in errors.items():
        lines.append(f'memory of {name} failed: {error[-300:]}')
    return '\n'.join(lines)


def plot_speed_accuracy(rows: Sequence[Mapping], path: str,
                        title: str = '') -> None:
    """Published top-1 against measured latency, one line per family (the
    manner of the paper's speed-accuracy figure), as a PNG.

    Args:
        rows (Sequence[Mapping]): :func:`edge_rows`'s rows.
        path (str): The PNG to write.
        title (str): Plot title. Defaults to ''.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    styles = {
        'FcaFormer': dict(color='tab:red', marker='*', markersize=11),
        'FcaFormer deployed': dict(color='tab:red', marker='*',
                                   linestyle='--', markersize=8,
                                   alpha=0.6),
        'ConvNeXt': dict(color='tab:blue', marker='o'),
        'Swin': dict(color='tab:green', marker='s'),
        'EfficientFormer': dict(color='tab:purple', marker='^'),
    }
    for family in FAMILIES:
        points = sorted((r['median_ms'], r['top1'], r['label'])
                        for r in rows
                        if r['family'] == family and r['median_ms'])
        if not points:
            continue
        ax.plot([p[0] for p in points], [p[1] for p in points],
                label=family, **styles[family])
        if family != 'FcaFormer deployed':
            for ms, top1, label in points:
                short = label.split('-')[-1]
                if family == 'EfficientFormer':
                    short = 'EF-' + short
                ax.annotate(short, (ms, top1),
                            textcoords='offset points', xytext=(4, -10),
                            fontsize=7)
    ax.set_xscale('log')
    ticker = matplotlib.ticker
    ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1., 2., 5.)))
    ax.xaxis.set_major_formatter(ticker.FormatStrFormatter('%g'))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel('latency, batch 1, measured here (ms, log scale)')
    ax.set_ylabel('ImageNet-1k top-1, published (%)')
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc='lower right')
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

