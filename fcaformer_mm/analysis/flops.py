"""Count the parameters and multiply-accumulates (MACs) of a config's model.

Two MAC counts are reported, one multiply-add counted as one MAC:

nn-only
    Forward hooks on ``nn`` modules, with the rules of mmcv 1.x's
    ``get_model_complexity_info``, the counter behind the published FcaFormer
    numbers. Only modules whose exact type is listed count (convolutions,
    transposed convolutions, linear layers, ReLU-like activations, poolings,
    BatchNorm/GroupNorm/InstanceNorm/LayerNorm, ``nn.Upsample``);
    subclasses, other modules and all functional operations, attention
    matmuls included, count nothing; FcaFormer's ``FcaBlock`` adds the
    key/value projection of its cross tokens, which uses ``qkv``'s weights
    (a module type may also add such work through a static
    ``nn_module_macs(module, inputs, output)``).
full
    ``mmengine.analysis.FlopAnalyzer``, which traces the forward pass and
    counts operators (convolutions, linear layers, ``matmul``/``bmm``/
    ``einsum``, norms, upsampling, ...) wherever they are called from. Where
    tracing fails, ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs / 2)
    is used instead; the report names the counter used.

The forward pass is the host's tensor path: ``_forward`` for mmseg
segmentors (backbone, neck and decode head: no auxiliary head, no sliding
window), ``_forward`` for mmdet detectors (RPN proposals, at most 1000 with
the usual test settings, then the RoI heads), and ``forward(mode='tensor')``
for mmpretrain classifiers. Mask heads see at most ``--mask-rois`` RoIs
(default 100): the convention of mmdet 2.x's ``forward_dummy``, behind the
published numbers, and of mmdet 3.x's ``StandardRoIHead.forward``; mmdet
3.x's ``CascadeRoIHead.forward`` runs its three mask heads on all RoIs,
which would count ten times the mask-head MACs of the published figures.
It runs on the CPU in eval mode, on one random image; the model is not
initialised from any checkpoint, so nothing is downloaded.

Default input sizes follow the codebases' own tools and the published tables:
``--shape 512 2048`` (H W) for mmseg configs, ``--shape 1280 800`` for mmdet,
``--shape 224 224`` for mmpretrain.

Example:
    >>> from fcaformer_mm.analysis.flops import analyse, format_report
    >>> print(format_report(analyse('configs/fcaformer_l2_in1k.py')))
"""
from __future__ import annotations

import argparse
import contextlib
import json
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
import torch
from mmengine.config import Config, DictAction
from torch import nn

from fcaformer_mm.models.backbones.fcaformer import FcaBlock
from fcaformer_mm.utils.model_builder import (
    build_model_from_config,
    image_side,
    tensor_forward,
)

#: Input (H, W) used when ``--shape`` is not given, by default scope.
DEFAULT_SHAPES: dict[str, tuple[int, int]] = {
    'mmseg': (512, 2048),
    'mmdet': (1280, 800),
    'mmpretrain': (224, 224),
}
FALLBACK_SHAPE = (224, 224)

NN_COUNTER_NAME = ('nn-module hooks, mmcv 1.x get_model_complexity_info '
                   'rules (fcaformer_mm.analysis.flops)')
FULL_COUNTER_NAMES = {
    'mmengine': 'mmengine.analysis.FlopAnalyzer (traced operators)',
    'torch': 'torch.utils.flop_counter.FlopCounterMode (FLOPs / 2)',
}
#: Operators of the full count for batched matrix products, such as those of
#: attention (``q @ k``, ``attn @ v``); linear layers are not among them.
MATMUL_OPS = ('matmul', 'bmm', 'einsum', 'scaled_dot_product_attention',
              '_scaled_dot_product_flash_attention_for_cpu')


# --------------------------------------------------------------------------
# The nn-only counter: one forward hook per counted module, mmcv 1.x rules.
# --------------------------------------------------------------------------
def _first(inputs: tuple) -> torch.Tensor:
    return inputs[0]


def _conv_macs(module: nn.Module, inputs: tuple,
               output: torch.Tensor) -> int:
    """Kernel MACs at every output position, plus one add per output value
    for the bias."""
    out_positions = output.shape[0] * int(np.prod(output.shape[2:]))
    per_position = (
        int(np.prod(module.kernel_size)) * module.in_channels *
        (module.out_channels // module.groups))
    macs = per_position * out_positions
    if module.bias is not None:
        macs += module.out_channels * out_positions
    return macs


def _deconv_macs(module: nn.Module, inputs: tuple,
                 output: torch.Tensor) -> int:
    """Kernel MACs at every *input* position, plus the bias adds."""
    x = _first(inputs)
    in_positions = x.shape[0] * int(np.prod(x.shape[2:]))
    per_position = (
        int(np.prod(module.kernel_size)) * module.in_channels *
        (module.out_channels // module.groups))
    macs = per_position * in_positions
    if module.bias is not None:
        # mmcv 1.x multiplies the output height by itself here; the two
        # agree for the square maps of mask heads.
        macs += module.out_channels * output.shape[0] * int(
            np.prod(output.shape[2:]))
    return macs


def _linear_macs(module: nn.Module, inputs: tuple,
                 output: torch.Tensor) -> int:
    """Input elements times output features; the bias is not counted."""
    return _first(inputs).numel() * output.shape[-1]


def _output_elements(module: nn.Module, inputs: tuple,
                     output: torch.Tensor) -> int:
    return output.numel()


def _input_elements(module: nn.Module, inputs: tuple,
                    output: torch.Tensor) -> int:
    return _first(inputs).numel()


def _norm_macs(module: nn.Module, inputs: tuple,
               output: torch.Tensor) -> int:
    """One per input element, two with an affine transform."""
    affine = (
        getattr(module, 'affine', False)
        or getattr(module, 'elementwise_affine', False))
    return _first(inputs).numel() * (2 if affine else 1)


def nn_counter_rules() -> dict[type, Callable]:
    """The module types that mmcv 1.x counts, and how.

    mmcv's own wrappers of ``nn`` layers are added when mmcv is installed.
    The lookup is by exact type, so subclasses (e.g. ``nn.SyncBatchNorm``,
    or a channels-first LayerNorm that subclasses ``nn.LayerNorm``) count
    nothing, as in mmcv 1.x.
    """
    rules: dict[type, Callable] = {}
    for cls in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
        rules[cls] = _conv_macs
    for cls in (nn.ReLU, nn.PReLU, nn.ELU, nn.LeakyReLU, nn.ReLU6):
        rules[cls] = _output_elements
    for cls in (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d,
                nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveMaxPool1d,
                nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
                nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
                nn.AdaptiveAvgPool3d):
        rules[cls] = _input_elements
    for cls in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm,
                nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d,
                nn.LayerNorm):
        rules[cls] = _norm_macs
    rules[nn.Linear] = _linear_macs
    rules[nn.Upsample] = _output_elements
    rules[nn.ConvTranspose2d] = _deconv_macs
    rules[FcaBlock] = _fca_block_macs
    try:
        from mmcv.cnn.bricks import wrappers
    except ImportError:
        return rules
    for name, rule in (('Conv2d', _conv_macs), ('Conv3d', _conv_macs),
                       ('ConvTranspose2d', _deconv_macs),
                       ('MaxPool2d', _input_elements),
                       ('MaxPool3d', _input_elements),
                       ('Linear', _linear_macs)):
        cls = getattr(wrappers, name, None)
        if isinstance(cls, type):
            rules[cls] = rule
    return rules


def _fca_block_macs(module: FcaBlock, inputs: tuple, output: object) -> int:
    """What an FCA block computes outside its modules: the key/value
    projection of its cross tokens, which uses ``qkv``'s weights directly."""
    cross = inputs[1] if len(inputs) > 1 else None
    return 0 if cross is None else cross.numel() * 2 * module.dim


def _rule_of(module: nn.Module, rules: dict[type, Callable]) -> Callable:
    """The counting rule of ``module``: by exact type, else the module
    type's own ``nn_module_macs`` (None for neither)."""
    rule = rules.get(type(module))
    return rule if rule is not None else getattr(
        type(module), 'nn_module_macs', None)


def count_nn_macs(model: nn.Module, forward: Callable[[], object],
                  by_type: Counter | None = None) -> int:
    """Run ``forward()`` once with counting hooks on ``model``'s modules.

    Args:
        model (nn.Module): The modules to hook.
        forward (callable): Runs the model; called once, without arguments.
        by_type (Counter, optional): Filled with the MACs of each module
            type. Defaults to None.

    Returns:
        int: The MACs of all calls of the counted modules.
    """
    rules = nn_counter_rules()
    totals: Counter = Counter()

    def make_hook(rule: Callable, type_name: str) -> Callable:

        def hook(module: nn.Module, inputs: tuple, output: object) -> None:
            totals[type_name] += int(rule(module, inputs, output))

        return hook

    handles = []
    for module in model.modules():
        rule = _rule_of(module, rules)
        if rule is not None:
            handles.append(
                module.register_forward_hook(
                    make_hook(rule,
                              type(module).__name__)))
    try:
        with torch.no_grad():
            forward()
    finally:
        for handle in handles:
            handle.remove()
    if by_type is not None:
        by_type.update(totals)
    return sum(totals.values())


# --------------------------------------------------------------------------
# The full counter: traced operators.
# --------------------------------------------------------------------------
def count_full_macs(model: nn.Module,
                    forward: Callable[[nn.Module, torch.Tensor], object],
                    inputs: torch.Tensor,
                    counter: str = 'auto') -> tuple[int, str, Counter]:
    """Count all traced multiply-accumulates of one forward pass.

    Args:
        model (nn.Module): The model.
        forward (callable): ``forward(model, inputs)`` runs it.
        inputs (torch.Tensor): The input batch.
        counter (str): ``'mmengine'``, ``'torch'`` or ``'auto'`` (mmengine,
            or torch where tracing fails). Defaults to ``'auto'``.

    Returns:
        tuple: The MACs, the name of the counter used, and the MACs per
        operator.
    """
    wrapper = _ForwardWith(model, forward).eval()
    errors = []
    if counter in ('auto', 'mmengine'):
        try:
            return _count_mmengine(wrapper, inputs)
        except Exception as exc:  # tracing is fragile; say why, then fall back
            if counter == 'mmengine':
                raise
            errors.append(f'mmengine FlopAnalyzer failed: '
                          f'{type(exc).__name__}: {exc}')
    if counter in ('auto', 'torch'):
        macs, name, by_op = _count_torch(wrapper, inputs)
        if errors:
            name += f' [{errors[0].splitlines()[0][:200]}]'
        return macs, name, by_op
    raise ValueError(f'Unknown full counter {counter!r}; choose from '
                     "'auto', 'mmengine', 'torch'.")


def _sdpa_macs(inputs: list, outputs: list) -> int:
    """MACs of ``aten::scaled_dot_product_attention`` for FlopAnalyzer.

    FlopAnalyzer has no handle for the fused attention kernel; without one,
    the attention matmuls it replaces would silently count nothing. With
    ``q`` of shape ``(..., L, E)``, ``k`` ``(..., S, E)`` and ``v``
    ``(..., S, Ev)``: ``L*S*E`` for the logits plus ``L*S*Ev`` for the
    weighted sum, per batch element and head.
    """
    from mmengine.analysis.jit_handles import get_shape
    q_shape, k_shape, v_shape = (get_shape(v) for v in inputs[:3])
    batch = int(np.prod(q_shape[:-2]))
    length, source = q_shape[-2], k_shape[-2]
    return batch * length * source * (q_shape[-1] + v_shape[-1])


def _count_mmengine(wrapper: nn.Module,
                    inputs: torch.Tensor) -> tuple[int, str, Counter]:
    from mmengine.analysis import FlopAnalyzer

    analyzer = FlopAnalyzer(wrapper, (inputs, ))
    analyzer.set_op_handle('aten::scaled_dot_product_attention', _sdpa_macs)
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    analyzer.tracer_warnings('none')
    with torch.no_grad():
        total = int(analyzer.total())
        by_op = Counter({k: int(v) for k, v in analyzer.by_operator().items()})
    return total, FULL_COUNTER_NAMES['mmengine'], by_op


def _torch_cpu_sdpa() -> dict:
    """A FlopCounterMode formula for the CPU kernel of fused attention.

    torch's counter knows the CUDA attention kernels but not
    ``aten._scaled_dot_product_flash_attention_for_cpu``, which would
    count as nothing.
    """
    from torch.utils import flop_counter
    op = getattr(torch.ops.aten,
                 '_scaled_dot_product_flash_attention_for_cpu', None)
    if op is None or op in flop_counter.flop_registry:
        return {}

    def formula(query_shape, key_shape, value_shape, *args, out_shape=None,
                **kwargs) -> int:
        return flop_counter.sdpa_flop_count(query_shape, key_shape,
                                            value_shape)

    return {op: formula}


def _count_torch(wrapper: nn.Module,
                 inputs: torch.Tensor) -> tuple[int, str, Counter]:
    from torch.utils.flop_counter import FlopCounterMode

    mode = FlopCounterMode(display=False, custom_mapping=_torch_cpu_sdpa())
    with torch.no_grad(), mode:
        wrapper(inputs)
    by_op: Counter = Counter()
    for op, flops in mode.get_flop_counts().get('Global', {}).items():
        # 'aten.convolution' or 'aten.convolution.default' -> 'convolution'
        parts = str(op).split('.')
        by_op[parts[1] if len(parts) > 1 else parts[0]] += int(flops) // 2
    return mode.get_total_flops() // 2, FULL_COUNTER_NAMES['torch'], by_op


# --------------------------------------------------------------------------
# Models of the host codebases.
# --------------------------------------------------------------------------
def build_model(cfg: Config) -> tuple[nn.Module, str]:
    """``cfg.model`` in eval mode and its scope (see
    :func:`fcaformer_mm.utils.model_builder.build_model_from_config`)."""
    model, scope = build_model_from_config(cfg)
    return model.eval(), scope


class _ForwardWith(nn.Module):
    """``forward(model, inputs)`` as a module, for tracing."""

    def __init__(self, model: nn.Module,
                 forward: Callable[[nn.Module, torch.Tensor], object]):
        super().__init__()
        self.model = model
        self._forward = forward

    def forward(self, inputs: torch.Tensor) -> object:
        return self._forward(self.model, inputs)


@contextlib.contextmanager
def _cap_mask_rois(model: nn.Module, max_rois: int):
    """Let the mask heads of a detector compute at most ``max_rois`` RoIs.

    The rows beyond the cap repeat the last computed one, so the output keeps
    the shape that the rest of the RoI head expects.
    """
    roi_head = getattr(model, 'roi_head', None)
    heads = getattr(roi_head, 'mask_head', None)
    if max_rois <= 0 or heads is None:
        yield
        return
    heads = list(heads) if isinstance(heads, nn.ModuleList) else [heads]

    def capped(forward: Callable) -> Callable:

        def wrapper(x: torch.Tensor, *args, **kwargs):
            if x.shape[0] <= max_rois:
                return forward(x, *args, **kwargs)
            out = forward(x[:max_rois], *args, **kwargs)
            if not isinstance(out, torch.Tensor):
                raise TypeError(
                    f'Cannot cap the RoIs of {type(out).__name__} mask head '
                    'outputs; run with --mask-rois 0.')
            rest = out[-1:].expand(x.shape[0] - max_rois, *out.shape[1:])
            return torch.cat([out, rest])

        return wrapper

    for head in heads:
        head.forward = capped(head.forward)
    try:
        yield
    finally:
        for head in heads:
            del head.forward


@contextlib.contextmanager
def _watch_rois(model: nn.Module, seen: list):
    """Record how many RPN proposals reach the RoI head, if there is one.

    mmdet calls ``roi_head.forward(x, rpn_results_list, ...)`` directly,
    so a module hook would not fire; ``forward`` is wrapped instead.
    """
    roi_head = getattr(model, 'roi_head', None)
    if roi_head is None:
        yield
        return
    forward = roi_head.forward

    def watched(x, rpn_results_list, *args, **kwargs):
        seen.append(sum(len(results) for results in rpn_results_list))
        return forward(x, rpn_results_list, *args, **kwargs)

    roi_head.forward = watched
    try:
        yield
    finally:
        del roi_head.forward


# --------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The options of ``tools/analysis_tools/get_flops.py``."""
    parser = argparse.ArgumentParser(
        description='Parameters and MACs of the model of an OpenMMLab config '
        '(nn-module count as mmcv 1.x, and full traced count).')
    parser.add_argument('config', help='config file')
    parser.add_argument(
        '--shape',
        type=image_side,
        nargs='+',
        help='input size as H W, or one side for a square; defaults: '
        '512 2048 (mmseg), 1280 800 (mmdet), 224 224 (mmpretrain)')
    parser.add_argument(
        '--full-counter',
        choices=('auto', 'mmengine', 'torch'),
        default='auto',
        help='counter of the full count; auto: mmengine FlopAnalyzer, or '
        'torch FlopCounterMode where tracing fails (default: auto)')
    parser.add_argument(
        '--mask-rois',
        type=int,
        default=100,
        help='detectors: the most RoIs a mask head computes, as mmdet 2.x '
        'forward_dummy (default: 100; 0: no cap)')
    parser.add_argument(
        '--json', help='also write the results to this JSON file')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, xxx=yyy format')
    args = parser.parse_args(argv)
    if args.shape is not None and len(args.shape) > 2:
        parser.error(f'argument --shape: takes H W or one side for a square, '
                     f'got {len(args.shape)} values '
                     f'({" ".join(map(str, args.shape))})')
    return args


def _input_shape(shape: Sequence[int] | None,
                 scope: str) -> tuple[int, int]:
    if not shape:
        return DEFAULT_SHAPES.get(scope, FALLBACK_SHAPE)
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    raise ValueError(f'--shape takes H W or one side, got {list(shape)}.')


def analyse(config: str,
            shape: Sequence[int] | None = None,
            cfg_options: dict | None = None,
            full_counter: str = 'auto',
            mask_rois: int = 100) -> dict:
    """Count the parameters and MACs of a config's model.

    Returns:
        dict: ``config``, ``model``, ``scope``, ``input_shape``, ``params``,
        ``params_by_child``, ``nn_macs``, ``nn_counter``, ``nn_macs_by_type``,
        ``full_macs``, ``full_counter``, ``full_macs_by_op``,
        ``matmul_macs`` (the part of the full count in matmul-like
        operators), ``num_rois`` and ``mask_rois`` (the RoIs of the box
        and the mask heads of detectors, else None).
    """
    from mmengine.registry import DefaultScope

    from fcaformer_mm.utils.entrypoint import check_cfg_options, read_config

    cfg = read_config(config)
    if cfg_options:
        check_cfg_options(cfg, cfg_options)
        cfg.merge_from_dict(cfg_options)
    model, scope = build_model(cfg)
    height, width = _input_shape(shape, scope)
    inputs = torch.randn(1, 3, height, width)
    forward = tensor_forward(scope)

    nn_by_type: Counter = Counter()
    rois: list = []
    with DefaultScope.overwrite_default_scope(scope), \
            _cap_mask_rois(model, mask_rois):
        with _watch_rois(model, rois):
            nn_macs = count_nn_macs(model, lambda: forward(model, inputs),
                                    nn_by_type)
        full_macs, full_name, by_op = count_full_macs(
            model, forward, inputs, full_counter)
    num_rois = rois[0] if rois else None
    return dict(
        config=config,
        model=type(model).__name__,
        scope=scope,
        input_shape=[1, 3, height, width],
        params=sum(p.numel() for p in model.parameters()),
        params_by_child={
            name: sum(p.numel() for p in child.parameters())
            for name, child in model.named_children()
        },
        nn_macs=nn_macs,
        nn_counter=NN_COUNTER_NAME,
        nn_macs_by_type=dict(nn_by_type.most_common()),
        full_macs=full_macs,
        full_counter=full_name,
        full_macs_by_op=dict(by_op.most_common()),
        matmul_macs=sum(v for k, v in by_op.items() if k in MATMUL_OPS),
        num_rois=num_rois,
        mask_rois=num_rois if num_rois is None or mask_rois <= 0 else min(
            num_rois, mask_rois),
    )


def format_report(result: dict) -> str:
    """The results as text."""
    def g(x: int) -> str:
        return f'{x / 1e9:.2f} G'

    lines = [
        '=' * 60,
        f'Config: {result["config"]}',
        f'Model: {result["model"]} (scope {result["scope"]}), input shape '
        f'{tuple(result["input_shape"])}',
        f'Params: {result["params"] / 1e6:.2f} M ({result["params"]:,})',
    ]
    lines += [
        f'  {name}: {n / 1e6:.2f} M'
        for name, n in result['params_by_child'].items() if n
    ]
    if result['num_rois'] is not None:
        lines.append(f'RoIs from the RPN: {result["num_rois"]}, of which '
                     f'{result["mask_rois"]} through the mask heads')
    lines += [
        f'MACs, nn modules only: {g(result["nn_macs"])}',
        f'  counter: {result["nn_counter"]}',
        '  by module type: ' + ', '.join(
            f'{k} {g(v)}' for k, v in result['nn_macs_by_type'].items()),
        f'MACs, full: {g(result["full_macs"])}',
        f'  counter: {result["full_counter"]}',
        '  by operator: ' + ', '.join(
            f'{k} {g(v)}' for k, v in result['full_macs_by_op'].items()),
        f'  of which matmul/bmm/einsum/attention: '
        f'{g(result["matmul_macs"])}',
        'One multiply-add is one MAC. Full minus nn-only is not only the '
        'attention matmuls: the two also count norms, biases and '
        'activations differently.',
        '=' * 60,
    ]
    return '\n'.join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line of ``tools/analysis_tools/get_flops.py``."""
    args = parse_args(argv)
    result = analyse(args.config, args.shape, args.cfg_options,
                     args.full_counter, args.mask_rois)
    print(format_report(result))
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as f:
            json.dump(result, f, indent=2)
    return 0
