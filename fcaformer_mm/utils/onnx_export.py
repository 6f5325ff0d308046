"""Export FcaFormer, or a whole model of a config, to ONNX.

The graph takes images of any batch, height and width (dynamic axes 0, 2,
3), and is checked against PyTorch with onnxruntime on random images of
other sizes (``--verify``): the largest absolute difference of every output
is reported and must not exceed ``--tolerance``.

What is exported:

- a config whose model is an mmseg segmentor: the tensor path
  ``_forward`` (backbone, neck, decode head: the seg logits at 1/4 of the
  input, no auxiliary head, no resize, no sliding window);
- ``--backbone-only`` (or a config whose model is a backbone): the
  backbone alone, one output per stage;
- no config at all: the FcaFormer backbone given by ``--arch``.

Adaptive average pooling to a grid larger than 1x1 (the pyramid pooling
of UPerHead) has no ONNX form for inputs of unknown size; the tool swaps
those layers for an equivalent made of slices and means, so the graph stays
valid for every input size. SyncBN is built as BN (same inference).

Requires ``onnx`` and ``onnxruntime``; the exporter is TorchScript-based
(``dynamo=False``), which needs no ``onnxscript``.

Examples:
    python tools/deployment/export_onnx.py \\
        configs/upernet_fcaformer_l2_ade20k.py --out upernet.onnx --verify
    python tools/deployment/export_onnx.py --arch l2 --out fcaformer.onnx \\
        --checkpoint fcaformer_l2.pth --verify --deploy
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn


class SlicedAdaptiveAvgPool2d(nn.Module):
    """``nn.AdaptiveAvgPool2d`` written with slices, for ONNX export.

    Bin ``i`` of ``n`` over a side of length ``L`` spans
    ``[floor(i * L / n), ceil((i + 1) * L / n))``, the bins of PyTorch's
    adaptive pooling, computed from the traced size, so the exported graph
    is right for every input size.
    """

    def __init__(self, output_size) -> None:
        super().__init__()
        if isinstance(output_size, int):
            output_size = (output_size, output_size)
        self.output_size = tuple(output_size)

    @staticmethod
    def _bins(length, n: int) -> list:
        return [((i * length) // n, ((i + 1) * length + n - 1) // n)
                for i in range(n)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out_h, out_w = self.output_size
        height, width = x.shape[-2], x.shape[-1]
        out_h = height if out_h is None else out_h
        out_w = width if out_w is None else out_w
        if (out_h, out_w) == (1, 1):
            return x.mean(dim=(-2, -1), keepdim=True)
        rows = []
        for y0, y1 in self._bins(height, out_h):
            band = x[..., y0:y1, :]
            rows.append(
                torch.cat([
                    band[..., x0:x1].mean(dim=(-2, -1), keepdim=True)
                    for x0, x1 in self._bins(width, out_w)
                ],
                          dim=-1))
        return torch.cat(rows, dim=-2)


def make_exportable(model: nn.Module) -> int:
    """Swap adaptive average poolings for :class:`SlicedAdaptiveAvgPool2d`.

    Returns:
        int: The number of layers swapped.
    """
    swapped = 0
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.AdaptiveAvgPool2d):
                setattr(module, child_name,
                        SlicedAdaptiveAvgPool2d(child.output_size))
                swapped += 1
    return swapped


def build(args: argparse.Namespace) -> tuple[nn.Module, str]:
    """The module to export and its kind (``segmentor`` or ``backbone``)."""
    from fcaformer_mm.models.backbones.fcaformer import FcaFormer
    from fcaformer_mm.utils.model_builder import (
        TensorForward,
        build_model_from_config,
    )

    if args.config is None:
        model, kind = FcaFormer(arch=args.arch), 'backbone'
    else:
        # Weights come from --checkpoint, never from the config's init_cfg
        # (building does not initialise).
        model, _ = build_model_from_config(args.config)
        if args.backbone_only and hasattr(model, 'backbone'):
            model = model.backbone
        kind = 'segmentor' if hasattr(model, 'decode_head') else 'backbone'
        if kind == 'backbone' and hasattr(model, 'backbone'):
            raise ValueError(
                f'{type(model).__name__} is neither an mmseg segmentor nor a '
                'backbone; use --backbone-only to export its backbone.')
    if args.checkpoint:
        # Read with weights_only=True (fcaformer_mm.compat); stops unless
        # the weights fit the model (fcaformer_mm.utils.checkpoint_check).
        from fcaformer_mm.utils.checkpoint_check import load_fitting_weights
        load_fitting_weights(model, args.checkpoint, args.allow_partial)
    model.eval()
    if args.deploy:
        backbone = getattr(model, 'backbone', model)
        if not hasattr(backbone, 'switch_to_deploy'):
            raise ValueError(f'{type(backbone).__name__} has no '
                             'switch_to_deploy().')
        backbone.switch_to_deploy()
    scope = 'mmseg' if kind == 'segmentor' else None
    return TensorForward(model, scope).eval(), kind


def export(module: nn.Module, path: str, shape: Sequence[int],
           opset: int) -> list[str]:
    """Export with dynamic batch, height and width; returns output names."""
    x = torch.randn(1, 3, *shape)
    with torch.no_grad():
        outs = module(x)
    outs = outs if isinstance(outs, (tuple, list)) else (outs, )
    names = ['seg_logits'] if len(outs) == 1 and getattr(
        module, 'kind', '') == 'segmentor' else [
            f'out{i}' for i in range(len(outs))
        ]
    dynamic = {'input': {0: 'batch', 2: 'height', 3: 'width'}}
    for i, name in enumerate(names):
        dynamic[name] = {0: 'batch', 2: f'height_{i}', 3: f'width_{i}'}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            module, (x, ),
            path,
            input_names=['input'],
            output_names=names,
            dynamic_axes=dynamic,
            opset_version=opset,
            dynamo=False)
    return names


def verify(module: nn.Module, path: str,
           shapes: Sequence[Sequence[int]], seed: int = 0) -> list[dict]:
    """Largest absolute difference of every output, per input shape."""
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(onnx.load(path))
    session = ort.InferenceSession(
        path, providers=['CPUExecutionProvider'])
    gen = torch.Generator().manual_seed(seed)
    results = []
    for shape in shapes:
        x = torch.randn(*shape, generator=gen)
        with torch.no_grad():
            ref = module(x)
        ref = ref if isinstance(ref, (tuple, list)) else (ref, )
        outs = session.run(None, {'input': x.numpy()})
        diffs = [
            float((torch.from_numpy(o) - r).abs().max())
            for o, r in zip(outs, ref)
        ]
        results.append(
            dict(
                input_shape=list(shape),
                output_shapes=[list(o.shape) for o in outs],
                shapes_match=all(
                    tuple(o.shape) == tuple(r.shape)
                    for o, r in zip(outs, ref)),
                max_abs_diff=max(diffs),
                max_abs_diff_per_output=diffs,
                max_abs_ref=max(float(r.abs().max()) for r in ref)))
    return results



def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from fcaformer_mm.utils.model_builder import image_side

    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        'config', nargs='?', default=None,
        help='config file; omit to export the FcaFormer backbone of --arch')
    parser.add_argument('--arch', default='l2',
                        help='FcaFormer arch without a config')
    parser.add_argument(
        '--checkpoint', default=None,
        help='weights to export (path or URL); the tool stops unless they '
        'fit the model')
    parser.add_argument(
        '--allow-partial', action='store_true',
        help='export even if weights of the model are missing from '
        '--checkpoint (they keep their initial values)')
    parser.add_argument('--out', required=True, help='the .onnx file')
    parser.add_argument(
        '--backbone-only', action='store_true',
        help="export the config's backbone alone")
    parser.add_argument(
        '--deploy', action='store_true',
        help='switch_to_deploy() the backbone first (fused Conv-BN)')
    parser.add_argument(
        '--shape', type=image_side, nargs=2, default=[512, 512],
        metavar=('H', 'W'), help='size of the example input of the trace')
    parser.add_argument('--opset', type=int, default=17)
    parser.add_argument(
        '--verify', action='store_true',
        help='compare with PyTorch through onnxruntime')
    parser.add_argument(
        '--verify-shapes', nargs='+', default=None,
        help='inputs to compare on, as BxHxW (3 channels); default: the '
        'trace size and two others')
    parser.add_argument('--tolerance', type=float, default=1e-3)
    parser.add_argument('--json', default=None,
                        help='write the verification report')
    parser.add_argument('--threads', type=int, default=None)
    return parser.parse_args(argv)


def _verify_shapes(args: argparse.Namespace) -> list[tuple[int, ...]]:
    if args.verify_shapes:
        shapes = []
        for text in args.verify_shapes:
            b, h, w = (int(v) for v in text.lower().split('x'))
            shapes.append((b, 3, h, w))
        return shapes
    h, w = args.shape
    return [(1, 3, h, w), (2, 3, h * 3 // 4 + 5, w + 37),
            (1, 3, h // 2 + 3, w * 5 // 4 - 11)]


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse ``--out`` or ``--json`` that would replace an input (the
    checkpoint, the config) or each other, by file identity.

    Raises:
        ValueError: Naming the two options and the fix.
    """
    from fcaformer_mm.utils.entrypoint import refuse_overwriting_inputs

    inputs = {'--checkpoint': args.checkpoint, 'the config': args.config}
    refuse_overwriting_inputs(args.out, inputs, '--out')
    if args.json:
        refuse_overwriting_inputs(args.json, {**inputs, '--out': args.out},
                                  '--json')


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        check_outputs(args)
    except ValueError as err:
        sys.exit(f'error: {err}')
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from fcaformer_mm.compat import CheckpointError
    try:
        reference, kind = build(args)
    except CheckpointError as err:
        sys.exit(f'{type(err).__name__}: {err}')
    reference.kind = kind
    # The verification runs the model as built, not the swapped copy.
    module = copy.deepcopy(reference)
    swapped = make_exportable(module)
    names = export(module, args.out, args.shape, args.opset)
    print(f'exported {kind} to {args.out} (outputs: {", ".join(names)}; '
          'dynamic batch, height, width)')
    report = dict(
        config=args.config,
        arch=args.arch if args.config is None else None,
        kind=kind,
        onnx=args.out,
        outputs=names,
        trace_shape=list(args.shape),
        opset=args.opset,
        deploy=args.deploy,
        sliced_adaptive_pools=swapped,
        tolerance=args.tolerance)
    status = 0
    if args.verify:
        checks = verify(reference, args.out, _verify_shapes(args))
        report['checks'] = checks
        for c in checks:
            ok = c['shapes_match'] and c['max_abs_diff'] <= args.tolerance
            status |= 0 if ok else 1
            print(f'  input {c["input_shape"]}: outputs '
                  f'{c["output_shapes"]}, max |onnx - torch| = '
                  f'{c["max_abs_diff"]:.2e} '
                  f'{"ok" if ok else "FAILED"}')
        report['passed'] = status == 0
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return status
