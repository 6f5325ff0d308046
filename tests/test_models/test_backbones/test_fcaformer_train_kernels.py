"""The training kernels compute what plain training computes.

Outputs, input and parameter gradients and BatchNorm statistics of a
training step through the kernels of ``fcaformer_mm.models.utils.
train_kernels`` (the default) equal those of plain training
(``execution_options(fast_training=False)``) and of the reference
computation (``fast_inference=False``), with and without ``with_cp``, with
drop path and layer scale; each kernel also against the layers it replaces.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_fcaformer import TINY, seeded_input, seeded_state_dict, shapes_of
from torch import nn

from fcaformer_mm.models.backbones.fcaformer import FcaFormer
from fcaformer_mm.models.utils import train_kernels, windows
from fcaformer_mm.models.utils.execution import execution_options
from fcaformer_mm.models.utils.layers import ConvBN

KERNEL_NODES = ('_NormsMlpBackward', '_BnGeluConvBackward',
                '_WindowAttentionBackward', '_GatherRowsBackward',
                '_ScaledLinearBackward')


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def graph_nodes(outputs) -> set[str]:
    """Names of the autograd nodes behind ``outputs``."""
    seen, todo, names = set(), [o.grad_fn for o in outputs], set()
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        names.add(type(fn).__name__)
        todo.extend(f for f, _ in fn.next_functions)
    return names


def training_step(options: dict, size=(2, 3, 61, 97), arch=TINY,
                  **kwargs) -> dict:
    """One forward and backward of a seeded model (TINY unless ``arch``
    says otherwise) in training mode."""
    kwargs.setdefault('drop_path_rate', 0.3)
    kwargs.setdefault('layer_scale_init_value', 1.)
    model = FcaFormer(arch, **kwargs)
    model.load_state_dict(seeded_state_dict(shapes_of(model), seed=21))
    model.train()
    x = seeded_input(size, seed=22).requires_grad_(True)
    torch.manual_seed(23)  # the same drop-path draws on every path
    with execution_options(**options):
        outs = model(x)
        nodes = graph_nodes(outs)
        sum((o * o).mean() for o in outs).backward()
    return dict(
        outs=[o.detach() for o in outs],
        input_grad=x.grad,
        grads={n: p.grad for n, p in model.named_parameters()},
        stats={
            k: v.clone()
            for k, v in model.state_dict().items()
            if 'running' in k or 'num_batches' in k
        },
        nodes=nodes)


def assert_same_step(a: dict, b: dict, atol: float = 1e-5) -> None:
    for x, y in zip(a['outs'], b['outs'], strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=atol)
    torch.testing.assert_close(a['input_grad'], b['input_grad'], rtol=0,
                               atol=atol)
    assert a['grads'].keys() == b['grads'].keys()
    for name, grad in a['grads'].items():
        # None for frozen parameters only, on both paths alike.
        assert (grad is None) == (b['grads'][name] is None), name
        if grad is not None:
            torch.testing.assert_close(grad, b['grads'][name], rtol=0,
                                       atol=atol, msg=name)
            # Gradients of a mean loss are small: also within 0.1% of the
            # tensor's largest value (float rounding gives 2e-5 at most).
            scale = b['grads'][name].abs().max().item()
            diff = (grad - b['grads'][name]).abs().max().item()
            assert diff <= 1e-3 * scale + 1e-10, (name, diff, scale)
    assert a['stats'].keys() == b['stats'].keys()
    for key, value in a['stats'].items():
        torch.testing.assert_close(value, b['stats'][key], rtol=0,
                                   atol=1e-6, msg=key)


# --------------------------------------------------------------------------
# The whole model
# --------------------------------------------------------------------------
@pytest.mark.parametrize('size', [(2, 3, 61, 97), (1, 3, 64, 64),
                                  (2, 3, 33, 40)])
def test_kernels_match_plain_training(size):
    plain = training_step(dict(fast_training=False), size)
    fast = training_step({}, size)
    assert_same_step(fast, plain)
    # The kernels ran, and only on the default path.
    assert set(KERNEL_NODES) <= fast['nodes']
    assert not set(KERNEL_NODES) & plain['nodes']
    # Gradients reach every parameter, the attention biases included.
    assert all(g is not None for g in fast['grads'].values())
    assert fast['grads']['layer_2.blocks.1.attention_biases'].abs().sum() > 0


@pytest.mark.parametrize('with_cp', [False, True])
def test_l2_dense_as_upernet_trains_it(with_cp):
    """The L2 dense backbone with the UperNet config's drop path 0.1 and
    layer scale, on a map of several windows in stage 2 (padded at both
    sides): outputs, every gradient and the BatchNorm statistics of the
    training kernels equal those of the reference computation within
    1e-5."""
    kwargs = dict(arch='l2', out_channels=(96, 192, 384, 768),
                  drop_path_rate=0.1, with_cp=with_cp)
    size = (1, 3, 232, 296)
    reference = training_step(dict(fast_inference=False), size, **kwargs)
    fast = training_step({}, size, **kwargs)
    assert set(KERNEL_NODES) <= fast['nodes']
    assert not set(KERNEL_NODES) & reference['nodes']
    assert_same_step(fast, reference, atol=1e-5)


def test_reference_path_has_no_kernels():
    reference = training_step(dict(fast_inference=False))
    assert not set(KERNEL_NODES) & reference['nodes']
    assert_same_step(training_step({}), reference)


@pytest.mark.parametrize('options, plain_node', [
    (dict(fused_attention=False), '_WindowAttentionBackward'),
    (dict(explicit_windows=True), '_GatherRowsBackward'),
])
def test_kernels_with_other_options(options, plain_node):
    """Explicit attention and explicit windows take the plain attention
    and the plain partition; the other kernels still run and agree."""
    fast = training_step(options)
    assert '_NormsMlpBackward' in fast['nodes']
    assert plain_node not in fast['nodes']
    assert_same_step(fast,
                     training_step(dict(options, fast_training=False)))


def test_attention_chunk_option():
    """The attention backward one window at a time (the execution option
    of the step's context) gives the same step; bad values are refused."""
    assert_same_step(training_step(dict(attention_chunk_bytes=1)),
                     training_step(dict(fast_training=False)))
    with pytest.raises(ValueError, match='attention_chunk_bytes'):
        with execution_options(attention_chunk_bytes=0):
            pass


def test_kernels_with_cp_match_plain_training():
    plain = training_step(dict(fast_training=False))
    with_cp = training_step({}, with_cp=True)
    # Recomputed blocks, stem and downsample layers count every batch in
    # the BatchNorm statistics once, as without with_cp.
    assert_same_step(with_cp, plain)
    assert_same_step(training_step(dict(fast_training=False), with_cp=True),
                     plain)


def test_norm_eval_and_frozen_stages():
    """BatchNorm in eval mode keeps the plain BatchNorm-GELU; frozen
    stages run in eval mode without kernels."""
    for kwargs in (dict(norm_eval=True), dict(frozen_stages=1)):
        fast = training_step({}, **kwargs)
        plain = training_step(dict(fast_training=False), **kwargs)
        assert_same_step(fast, plain)
    assert '_BnGeluConvBackward' not in training_step(
        {}, norm_eval=True)['nodes']


def test_sync_batchnorm_keeps_its_forward():
    """SyncBatchNorm gathers its statistics across processes in its own
    forward: the BatchNorm-GELU-conv kernel leaves it alone."""
    model = nn.SyncBatchNorm.convert_sync_batchnorm(FcaFormer(TINY)).train()
    outs = model(seeded_input((1, 3, 64, 64), seed=25))
    nodes = graph_nodes(outs)
    assert '_BnGeluConvBackward' not in nodes
    assert '_NormsMlpBackward' in nodes


def test_no_kernels_in_eval_or_without_autograd():
    model = FcaFormer(TINY).eval()
    x = seeded_input((1, 3, 64, 64), seed=24)
    assert not set(KERNEL_NODES) & graph_nodes(model(x))
    model.train()
    with torch.no_grad():
        assert all(o.grad_fn is None for o in model(x))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert not set(KERNEL_NODES) & graph_nodes(model(x))


# --------------------------------------------------------------------------
# Each kernel against the layers it replaces
# --------------------------------------------------------------------------
def _leaf(*shape, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen).requires_grad_(True)


def _grads(out, inputs, seed):
    gen = torch.Generator().manual_seed(seed)
    grad = torch.randn(out.shape, generator=gen)
    return torch.autograd.grad(out, inputs, grad, allow_unused=True)


@pytest.mark.parametrize('cross', [0, 5])
@pytest.mark.parametrize('chunk_bytes', [1, 10**9])
def test_window_attention(cross, chunk_bytes):
    """Against explicit attention, one window at a time and all at once."""
    windows_, tokens, heads, head_dim = 5, 9, 3, 4
    dim = heads * head_dim
    qkv = _leaf(windows_, tokens, 3 * dim, seed=1)
    kv = _leaf(windows_, cross, 2 * dim, seed=2) if cross else None
    mask = _leaf(1, heads, tokens, tokens + cross, seed=3)
    inputs = [t for t in (qkv, kv, mask) if t is not None]
    scale = head_dim**-0.5
    out = train_kernels.window_attention(qkv, kv, mask, heads, scale,
                                         chunk_bytes)
    q, k, v = windows.split_heads(qkv, kv, heads)
    expected = ((q * scale) @ k.transpose(-2, -1) + mask).softmax(-1) @ v
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    for a, b in zip(_grads(out, inputs, 4), _grads(expected, inputs, 4)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


@pytest.mark.parametrize('norms', [0, 1, 2])
@pytest.mark.parametrize('gamma', [True, False])
def test_norms_mlp(norms, gamma):
    torch.manual_seed(5)
    dim = 6
    layers = [nn.LayerNorm(dim) for _ in range(norms)]
    for norm in layers:
        nn.init.normal_(norm.weight, 1, 0.1)
        nn.init.normal_(norm.bias, 0, 0.1)
    fc1, fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
    scale = _leaf(dim, seed=6) if gamma else None
    x = _leaf(2, 3, 5, dim, seed=7)
    params = [x, fc1.weight, fc1.bias, fc2.weight, fc2.bias]
    params += [p for n in layers for p in (n.weight, n.bias)]
    params += [scale] if gamma else []
    def normed():
        h = x
        for norm in layers:
            h = norm(h)
        return h

    out = train_kernels.norms_mlp(x, layers, fc1, fc2, scale)
    expected = fc2(F.gelu(fc1(normed())))
    if gamma:
        expected = scale * expected
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    for a, b in zip(_grads(out, params, 8), _grads(expected, params, 8)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    linear = train_kernels.norms_linear(x, layers, fc1)
    expected = fc1(normed())
    torch.testing.assert_close(linear, expected, rtol=0, atol=1e-6)
    params = [x, fc1.weight, fc1.bias]
    for a, b in zip(_grads(linear, params, 9), _grads(expected, params, 9)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_scaled_linear():
    proj = nn.Linear(6, 5)
    gamma = _leaf(5, seed=10)
    x = _leaf(4, 3, 6, seed=11)
    params = [x, proj.weight, proj.bias, gamma]
    out = train_kernels.scaled_linear(x, proj, gamma)
    expected = gamma * proj(x)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    for a, b in zip(_grads(out, params, 12), _grads(expected, params, 12)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    torch.testing.assert_close(train_kernels.scaled_linear(x, proj, None),
                               proj(x))


@pytest.mark.parametrize('momentum', [0.1, None])
@pytest.mark.parametrize('channels_last', [True, False])
def test_conv_bn_gelu_chain(momentum, channels_last):
    """Against the modules, running statistics included (also the
    cumulative average of ``momentum=None``)."""
    torch.manual_seed(13)
    layers = nn.ModuleList([
        ConvBN(3, 8, 3, 2, 1), ConvBN(8, 8, 3, 2, 1, groups=8),
        ConvBN(8, 4)
    ])
    for layer in layers:
        layer.bn.momentum = momentum
        nn.init.normal_(layer.bn.weight, 1, 0.2)
        nn.init.normal_(layer.bn.bias, 0, 0.2)
    twin = [ConvBN(3, 8, 3, 2, 1), ConvBN(8, 8, 3, 2, 1, groups=8),
            ConvBN(8, 4)]
    for a, b in zip(twin, layers):
        a.load_state_dict(b.state_dict())
        a.bn.momentum = momentum
    x = _leaf(2, 3, 17, 22, seed=14)
    if channels_last:
        x = x.detach().contiguous(
            memory_format=torch.channels_last).requires_grad_(True)
    for _ in range(2):  # the running statistics after two batches
        out = train_kernels.conv_bn_gelu_chain(x, layers)
        expected = twin[2](F.gelu(twin[1](F.gelu(twin[0](x)))))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    params = [x] + list(layers.parameters())
    params_twin = [x] + [p for t in twin for p in t.parameters()]
    # Weight gradients here reach 10: float rounding, relative 1e-6.
    for a, b in zip(_grads(out, params, 15), _grads(expected, params_twin,
                                                    15)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for a, b in zip(layers, twin):
        for name, buf in a.bn.named_buffers():
            torch.testing.assert_close(buf, getattr(b.bn, name), rtol=0,
                                       atol=1e-6, msg=name)


@pytest.mark.parametrize('top_left', [(0, 0), (3, 2)])
def test_gather_rows(top_left):
    """Padding and partition into windows and back, with a learned pad
    row, against ``cat`` + ``index_select`` under autograd."""
    batch, height, width, ws, dim = 2, 5, 9, 4, 3
    to_windows, to_map = windows.window_indices(batch, height, width, ws,
                                                *top_left, 'cpu')
    x = _leaf(batch * height * width, dim, seed=16)
    pad = _leaf(dim, seed=17)
    out = train_kernels.gather_rows(x, to_windows, to_map, pad)
    expected = torch.cat((x, pad[None])).index_select(0, to_windows)
    assert torch.equal(out, expected)
    for a, b in zip(_grads(out, [x, pad], 18), _grads(expected, [x, pad],
                                                      18)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    back = train_kernels.gather_rows(
        train_kernels.gather_rows(x, to_windows, to_map, pad), to_map,
        to_windows)
    assert torch.equal(back, x)
    expected = torch.cat((x, pad[None])).index_select(
        0, to_windows).index_select(0, to_map)
    for a, b in zip(_grads(back, [x, pad], 19),
                    _grads(expected, [x, pad], 19)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
