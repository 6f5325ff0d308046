"""The fast paths of FcaFormer compute the same numbers as the plain ones.

Fused attention (SDPA) against explicit matrix products, deployed (fused
Conv-BN and layer scales) against the plain model, channels-last against
contiguous maps, padding and window partition by index_select against
explicit padding, MLPs in chunks, oneDNN linear layers and Conv-BN folded
per forward (GELU fused) at inference against the reference code path, the
attention mask and folded weights following changing weights, FLOP counts
of the custom ops, and ``torch.compile`` without graph breaks (plain
operators; inductor with freezing computes the same numbers). The paths are
chosen with ``execution_options`` (a context variable), never a global.
"""
from __future__ import annotations

import copy

import pytest
import torch
from test_fcaformer import (
    TINY,
    golden_cases,
    seeded_input,
    seeded_state_dict,
    shapes_of,
)

from fcaformer_mm.models.backbones.fcaformer import FcaFormer
from fcaformer_mm.models.utils import cpu_kernels, windows
from fcaformer_mm.models.utils.execution import execution_options
from fcaformer_mm.models.utils.layers import ConvBN, trunc_normal_


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def seeded_model(**kwargs) -> FcaFormer:
    # Seeded weights give non-trivial BN statistics, layer scales and
    # attention biases, so that every fused quantity matters.
    model = FcaFormer(TINY, **kwargs)
    model.load_state_dict(seeded_state_dict(shapes_of(model), seed=3))
    return model.eval()


def assert_outputs_close(a, b, atol=1e-5):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.shape == y.shape
        torch.testing.assert_close(x, y, rtol=0, atol=atol)



def run(model, x, grad=False):
    if grad:
        return model(x)
    with torch.no_grad():
        return model(x)


# --------------------------------------------------------------------------
# Golden outputs of the official code through every path
# --------------------------------------------------------------------------
PATH_OPTIONS = {
    'explicit': dict(fused_attention=False),
    'whole-mlp': dict(mlp_chunk=0),
    'small-chunks': dict(mlp_chunk=7),
    'no-onednn': dict(onednn_linear=False),
    'onednn': dict(onednn_linear=True),
    'reference': dict(fast_inference=False),
    'explicit-windows': dict(explicit_windows=True),
}


@pytest.mark.parametrize('path', [
    'explicit', 'deploy', 'contiguous', 'whole-mlp', 'small-chunks',
    'no-onednn', 'onednn', 'reference', 'explicit-windows'
])
@pytest.mark.parametrize('index', range(4))
def test_golden_outputs_through_each_path(path, index):
    golden = golden_cases()
    case = golden['cases'][index]
    kwargs = dict(case['kwargs'])
    if path == 'contiguous':
        kwargs['channels_last'] = False
    model = FcaFormer(case['arch'], **kwargs).eval()
    model.load_state_dict(
        seeded_state_dict(shapes_of(model), golden['weight_seed']))
    if path == 'deploy':
        model.switch_to_deploy()
    with execution_options(**PATH_OPTIONS.get(path, {})):
        outs = run(model, seeded_input(tuple(case['input_shape']),
                                       case['input_seed']))
    for out, expected in zip(outs, case['outputs']):
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-4)


# --------------------------------------------------------------------------
# SDPA against explicit attention, also in training and in backward
# --------------------------------------------------------------------------
@pytest.mark.parametrize('size', [(64, 64), (61, 97), (96, 40)])
def test_sdpa_matches_explicit(size):
    model = seeded_model()
    x = seeded_input((2, 3, *size), seed=11)
    fused = run(model, x)
    with execution_options(fused_attention=False):
        explicit = run(model, x)
    assert_outputs_close(fused, explicit)


def test_sdpa_matches_explicit_gradients():
    x = seeded_input((2, 3, 61, 75), seed=12)
    results = []
    for fused in (True, False):
        model = seeded_model().train()
        with execution_options(fused_attention=fused):
            outs = model(x)
            sum((o * o).mean() for o in outs).backward()
        results.append({
            n: p.grad
            for n, p in model.named_parameters() if p.grad is not None
        })
    assert results[0].keys() == results[1].keys()
    for name in results[0]:
        torch.testing.assert_close(
            results[0][name], results[1][name], rtol=1e-4, atol=1e-6,
            msg=name)
    assert 'layer_2.blocks.2.s_token_bias' in results[0]
    assert 'layer_2.blocks.1.attention_biases' in results[0]


def test_sdpa_matches_explicit_in_bfloat16():
    model = seeded_model()
    x = seeded_input((1, 3, 64, 80), seed=13)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        fused = run(model, x)
        with execution_options(fused_attention=False):
            explicit = run(model, x)
    for a, b in zip(fused, explicit):
        assert a.dtype == b.dtype
        torch.testing.assert_close(
            a.float(), b.float(), rtol=0, atol=0.1)


# --------------------------------------------------------------------------
# Padding and window partition by index_select
# --------------------------------------------------------------------------
@pytest.mark.parametrize('size', [(5, 7), (14, 14), (15, 29), (3, 3)])
@pytest.mark.parametrize('top_left', [True, False])
def test_window_indices_match_pad_and_partition(size, top_left):
    batch, (height, width), ws, dim = 2, size, 7, 3
    pad_h, pad_w = (-height) % ws, (-width) % ws
    top, left = (pad_h, pad_w) if top_left else (0, 0)
    x = torch.arange(1, batch * height * width * dim + 1,
                     dtype=torch.float32).view(batch, height, width, dim)
    padded = torch.nn.functional.pad(
        x, (0, 0, left, pad_w - left, top, pad_h - top))
    rows, cols = padded.shape[1] // ws, padded.shape[2] // ws
    expected = windows.partition(padded, rows, cols, ws)

    to_windows, to_map = windows.window_indices(
        batch, height, width, ws, top, left, x.device)
    flat = x.reshape(-1, dim)
    got = torch.cat((flat, flat.new_zeros(1, dim))).index_select(
        0, to_windows)
    assert torch.equal(got.view_as(expected), expected)
    # Back from the windows to the map: every real position exactly once.
    assert torch.equal(got.index_select(0, to_map), flat)
    assert to_map.unique().numel() == batch * height * width


def test_window_index_cache_is_bounded():
    cached = windows._cached_window_indices
    cached.cache_clear()
    size = cached.cache_info().maxsize
    for height in range(1, 2 * size):
        windows.window_indices(1, height, 3, 7, 0, 0, 'cpu')
    assert cached.cache_info().currsize == size
    first = windows.window_indices(1, height, 3, 7, 0, 0, 'cpu')
    assert windows.window_indices(1, height, 3, 7, 0, 0,
                                  torch.device('cpu')) is first


@pytest.mark.parametrize('rows_cols', [(1, 1), (2, 3)])
@pytest.mark.parametrize('pad', [None, (1, 2, 3, 0)])
def test_partition_with_pad_and_merge_with_crop(rows_cols, pad):
    rows, cols = rows_cols
    ws, dim = 5, 3
    top, bottom, left, right = pad or (0, 0, 0, 0)
    height, width = rows * ws - top - bottom, cols * ws - left - right
    x = torch.randn(2, height, width, dim)
    padded = torch.nn.functional.pad(x, (0, 0, left, right, top, bottom))
    expected = padded.reshape(2, rows, ws, cols, ws, dim).permute(
        0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, dim)
    got = windows.partition(x, rows, cols, ws, pad)
    assert torch.equal(got, expected)
    crop = None if pad is None else (top, left, height, width)
    assert torch.equal(windows.merge(got, 2, rows, cols, ws, crop), x)
    if pad is None and rows == cols == 1:
        # One unpadded window per image: views, no copies.
        assert got.data_ptr() == x.data_ptr()
        assert windows.merge(got, 2, 1, 1, ws).data_ptr() == x.data_ptr()


@pytest.mark.parametrize('window_size', [7, 14])
@pytest.mark.parametrize('heads', [1, 6])
def test_gather_bias_matches_advanced_indexing(window_size, heads):
    index = windows.relative_offset_index(window_size)
    biases = torch.randn(heads, window_size**2, requires_grad=True)
    expected = biases[:, index]
    got = windows.gather_bias(biases, index)
    assert torch.equal(got, expected)
    # Differentiable as advanced indexing is.
    weight = torch.randn_like(expected)
    grad, = torch.autograd.grad((got * weight).sum(), biases)
    expected_grad, = torch.autograd.grad((expected * weight).sum(), biases)
    torch.testing.assert_close(grad, expected_grad)


@pytest.mark.parametrize('window_size,num_cross', [(7, 4), (7, 12),
                                                   (14, 16), (14, 112)])
def test_attention_mask_with_cross_keys_matches_gather_then_cat(
        window_size, num_cross):
    """The one-gather mask is the position bias gathered by advanced
    indexing next to the broadcast cross-key bias, with the same gradients
    for both tables."""
    heads = 3
    index = windows.relative_offset_index(window_size)
    # Float64: the two backward passes sum in different orders.
    gen = torch.Generator().manual_seed(window_size + num_cross)
    biases = torch.randn(heads, window_size**2, generator=gen,
                         dtype=torch.float64, requires_grad=True)
    token_bias = torch.randn(1, heads, 1, num_cross, generator=gen,
                             dtype=torch.float64, requires_grad=True)
    tokens = window_size**2
    expected = torch.cat(
        (biases[:, index], token_bias[0].expand(-1, tokens, -1)),
        dim=-1)[None]
    got = windows.attention_mask(biases, index, token_bias)
    assert got.shape == (1, heads, tokens, tokens + num_cross)
    assert got.is_contiguous() and torch.equal(got, expected)
    weight = torch.randn(expected.shape, generator=gen, dtype=torch.float64)
    grads = torch.autograd.grad((got * weight).sum(), (biases, token_bias))
    expected_grads = torch.autograd.grad((expected * weight).sum(),
                                         (biases, token_bias))
    for a, b in zip(grads, expected_grads):
        torch.testing.assert_close(a, b)


def test_blocks_of_a_window_size_share_one_offset_index():
    model = FcaFormer('l1')
    for stage in (model.layer_2, model.layer_3):
        first = stage.blocks[0].attention_bias_idxs
        assert all(b.attention_bias_idxs is first for b in stage.blocks)
        assert torch.equal(
            first, windows.relative_offset_index(stage.window_size))
    assert model.layer_2.blocks[0].attention_bias_idxs is not \
        model.layer_3.blocks[0].attention_bias_idxs
    assert not any('attention_bias_idxs' in k for k in model.state_dict())
    # Moving the model leaves the shared index alone.
    copied = copy.deepcopy(model).double()
    assert copied.layer_2.blocks[1].attention_bias_idxs.dtype == torch.int64
    assert first.data_ptr() == windows.shared_offset_index(7).data_ptr()


@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('gelu', [False, True])
@pytest.mark.parametrize('onednn', [False, True])
def test_pointwise_conv_matches_conv2d(channels_last, gelu, onednn):
    gen = torch.Generator().manual_seed(int(gelu) + 2 * int(onednn))
    x = torch.randn(2, 12, 5, 7, generator=gen)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(20, 12, 1, 1, generator=gen) * 0.2
    bias = torch.randn(20, generator=gen)
    expected = torch.nn.functional.conv2d(x, weight, bias)
    if gelu:
        expected = torch.nn.functional.gelu(expected)
    with torch.no_grad(), execution_options(onednn_linear=onednn):
        got = cpu_kernels.pointwise_conv(x, weight, bias, gelu)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    if channels_last:
        assert got.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize('chunk', [0, 5, 7, 100])
@pytest.mark.parametrize('scaled', [False, True])
@pytest.mark.parametrize('with_residual', [False, True])
def test_mlp_rows_adds_the_scaled_result_to_the_residual(
        chunk, scaled, with_residual):
    gen = torch.Generator().manual_seed(chunk)
    fc1, fc2 = torch.nn.Linear(6, 24), torch.nn.Linear(24, 6)
    norm = torch.nn.LayerNorm(6)
    x = torch.randn(3, 7, 6, generator=gen)
    residual = torch.randn(3, 7, 6, generator=gen)
    gamma = torch.rand(6, generator=gen) + 0.5 if scaled else None
    with torch.no_grad():
        expected = fc2(torch.nn.functional.gelu(fc1(norm(x))))
        if scaled:
            expected = gamma * expected
        if with_residual:
            expected = residual + expected
        with execution_options(mlp_chunk=chunk):
            got = cpu_kernels.mlp_rows(x, fc1, fc2, gamma, norm,
                                       residual if with_residual else None)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize('size', [(64, 64), (61, 97)])
def test_indexed_windows_match_explicit_padding(size):
    x = seeded_input((2, 3, *size), seed=17)
    model = seeded_model()
    indexed = run(model, x)
    with execution_options(explicit_windows=True):
        explicit = run(model, x)
    assert_outputs_close(indexed, explicit, atol=1e-5)


def test_indexed_windows_match_explicit_padding_gradients():
    x = seeded_input((2, 3, 61, 75), seed=18)
    results = []
    for explicit in (False, True):
        model = seeded_model().train()
        with execution_options(explicit_windows=explicit):
            outs = model(x)
            sum((o * o).mean() for o in outs).backward()
        results.append({
            n: p.grad
            for n, p in model.named_parameters() if p.grad is not None
        })
    assert results[0].keys() == results[1].keys()
    for name in results[0]:
        torch.testing.assert_close(
            results[0][name], results[1][name], rtol=1e-4, atol=1e-6,
            msg=name)
    # The zero rows of the padding reach norm1's bias through qkv.
    assert results[0]['layer_2.blocks.0.norm1.bias'].abs().sum() > 0


# --------------------------------------------------------------------------
# MLPs in chunks at inference
# --------------------------------------------------------------------------
def _linear_calls(model, x, monkeypatch, chunk):
    """Outputs, and the rows of every GELU ``linear`` call, with MLP chunks
    of ``chunk`` rows."""
    calls = []
    real = cpu_kernels.linear

    def spy(x, weight, bias=None, gelu=False):
        # An MLP's fc1 (4x wider), not a 1x1 convolution with GELU.
        mlp = gelu and weight.shape[0] == 4 * weight.shape[1]
        calls.append((x.numel() // x.shape[-1], mlp))
        return real(x, weight, bias, gelu)

    monkeypatch.setattr(cpu_kernels, 'linear', spy)
    try:
        with execution_options(mlp_chunk=chunk):
            outs = run(model, x)
    finally:
        monkeypatch.setattr(cpu_kernels, 'linear', real)
    return outs, [rows for rows, mlp in calls if mlp]


@pytest.mark.parametrize('chunk', [0, 1, 7, 64, 10**6])
def test_mlp_chunks_match_reference(chunk, monkeypatch):
    model = seeded_model()
    x = seeded_input((2, 3, 61, 97), seed=14)
    with execution_options(fast_inference=False):
        reference = run(model, x)
    _, whole_rows = _linear_calls(model, x, monkeypatch, 0)
    chunked, chunked_rows = _linear_calls(model, x, monkeypatch, chunk)
    assert_outputs_close(chunked, reference, atol=1e-5)
    # The MLPs (the 4 ConvNeXt and 4 FCA blocks of TINY) ran on the same
    # rows, in calls of at most `chunk` rows (whole with 0).
    assert len(whole_rows) == 8
    assert sum(chunked_rows) == sum(whole_rows)
    if chunk:
        assert max(chunked_rows) <= chunk
    assert (len(chunked_rows) > 8) == (0 < chunk < max(whole_rows))


def test_inference_paths_only_without_autograd(monkeypatch):
    model = seeded_model()
    x = seeded_input((1, 3, 64, 64), seed=15)
    pwconv1 = model.layer_0.blocks[0].pwconv1
    for mode, grad, plain in ((True, False, True), (False, True, True),
                              (False, False, False)):
        model.train(mode)
        calls = []
        hook = pwconv1.register_forward_hook(
            lambda mod, inp, out: calls.append(inp[0].shape))
        with torch.set_grad_enabled(grad):
            model(x)
        hook.remove()
        # The plain path calls the module on the whole map; inference
        # uses its weights in fcaformer_mm's own MLP.
        expected = [torch.Size([1, 16, 16, pwconv1.in_features])]
        assert calls == (expected if plain else []), (mode, grad)


@pytest.mark.skipif(cpu_kernels.ONEDNN_LINEAR_OP is None,
                    reason='this PyTorch build has no oneDNN linear')
@pytest.mark.parametrize('shape', [(7, 5), (2, 49, 32), (300, 96)])
@pytest.mark.parametrize('gelu', [False, True])
@pytest.mark.parametrize('bias', [False, True])
def test_onednn_linear_matches_f_linear(shape, gelu, bias, monkeypatch):
    gen = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(shape, generator=gen)
    weight = torch.randn(24, shape[-1], generator=gen) * 0.1
    b = torch.randn(24, generator=gen) if bias else None
    expected = torch.nn.functional.linear(x.double(), weight.double(),
                                          None if b is None else b.double())
    if gelu:
        expected = torch.nn.functional.gelu(expected)
    used = []
    op = cpu_kernels.ONEDNN_LINEAR_OP
    monkeypatch.setattr(cpu_kernels, 'ONEDNN_LINEAR_OP',
                        lambda *a: used.append(1) or op(*a))
    with torch.no_grad():
        got = cpu_kernels.linear(x, weight, b, gelu)  # F.linear by default
        assert used == []
        torch.testing.assert_close(got.double(), expected, rtol=0, atol=1e-5)
        with execution_options(onednn_linear=True):
            got = cpu_kernels.linear(x, weight, b, gelu)
    assert used == [1]
    assert got.dtype == torch.float32 and got.shape == expected.shape
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=1e-5)
    # Not with autograd, under autocast or for other dtypes.
    for context, tensor in ((torch.enable_grad(), x),
                            (torch.autocast('cpu', dtype=torch.bfloat16), x),
                            (torch.no_grad(), x.double())):
        with context, execution_options(onednn_linear=True):
            cpu_kernels.linear(tensor, weight.to(tensor.dtype),
                               None if b is None else b.to(tensor.dtype),
                               gelu)
    assert used == [1]


def test_flop_counter_sees_the_onednn_linears(monkeypatch):
    """torch's FlopCounterMode counts the same FLOPs on the inference path
    (oneDNN linears, MLP chunks) as on the plain code path: the custom op
    registers its formula."""
    from torch.utils.flop_counter import FlopCounterMode
    model = seeded_model()
    x = seeded_input((1, 3, 61, 75), seed=26)

    def total_flops():
        mode = FlopCounterMode(display=False)
        with torch.no_grad(), mode:
            model(x)
        return mode.get_total_flops()

    with execution_options(mlp_chunk=7, onednn_linear=True):
        fast = total_flops()
    with execution_options(fast_inference=False, onednn_linear=False):
        assert fast == total_flops() > 0


@pytest.mark.parametrize('gelu', [False, True])
@pytest.mark.parametrize('groups', [1, 8, 'pointwise'])
@pytest.mark.parametrize('channels_last', [False, True])
def test_conv_bn_inference_folds_and_follows_changes(gelu, groups,
                                                     channels_last):
    """Eager inference folds the BatchNorm at every call (and fuses GELU on
    the CPU) or follows the convolution with it, 1x1 convolutions as linear
    layers: the numbers of conv, BN, GELU, also after the statistics or
    weights change in place or through ``.data``, are loaded, or change
    dtype."""
    gen = torch.Generator().manual_seed(len(str(groups)) + 2 * gelu)
    module = ConvBN(8, 16, 1) if groups == 'pointwise' else ConvBN(
        8, 16, 3, 2, 1, groups=groups)
    module.bn.running_mean.copy_(torch.randn(16, generator=gen))
    module.bn.running_var.copy_(torch.rand(16, generator=gen) + 0.5)
    module.bn.weight.data.copy_(torch.rand(16, generator=gen) + 0.5)
    module.eval()
    x = torch.randn(2, 8, 13, 11, generator=gen)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def check():
        with torch.no_grad():
            got = cpu_kernels.conv_bn(module, x.to(module.c.weight.dtype),
                                      gelu=gelu)
            expected = module(x.to(module.c.weight.dtype))
        if gelu:
            expected = torch.nn.functional.gelu(expected)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)

    check()
    with torch.no_grad():
        module.bn.running_var.mul_(2)
    check()
    # .data copies do not bump version counters: nothing may depend on them
    module.c.weight.data.copy_(module.c.weight.data * -1.5)
    module.bn.running_mean.data.copy_(module.bn.running_mean.data + 3)
    check()
    state = {k: v + 0.5 for k, v in module.state_dict().items()
             if v.is_floating_point()}
    module.load_state_dict(state, strict=False)
    check()
    module.double()
    check()


def test_mlp_chunks_in_bfloat16_autocast():
    model = seeded_model()
    x = seeded_input((1, 3, 64, 80), seed=16)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        with execution_options(mlp_chunk=0):
            whole = run(model, x)
        with execution_options(mlp_chunk=7):
            chunked = run(model, x)
    for a, b in zip(chunked, whole):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a.float(), b.float(), rtol=0, atol=0.1)


# --------------------------------------------------------------------------
# switch_to_deploy
# --------------------------------------------------------------------------
def test_deploy_same_outputs_and_idempotent():
    model = seeded_model()
    x = seeded_input((2, 3, 72, 56), seed=14)
    before = run(model, x)
    assert model.switch_to_deploy() is model
    state = {k: v.clone() for k, v in model.state_dict().items()}
    fused = run(model, x)
    assert_outputs_close(before, fused, atol=1e-5)
    model.switch_to_deploy()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)
    assert_outputs_close(fused, run(model, x), atol=0)


def test_deploy_is_explicit_and_fuses_everything():
    model = seeded_model()
    keys = model.state_dict().keys()
    assert any('.bn.' in k for k in keys) and any('gamma' in k for k in keys)
    model.eval()
    assert not model.deployed
    model.switch_to_deploy()
    keys = model.state_dict().keys()
    assert model.deployed
    assert not any('.bn.' in k or 'gamma' in k for k in keys)
    assert not any(
        isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert 'layer_2.blocks.0.local_conv.c.bias' in keys
    assert 'patch_embed.seq.0.c.bias' in keys
    assert 'layer_0.downsample.conv2.c.bias' in keys


def test_deploy_with_frozen_stages_and_norm_eval():
    model = seeded_model(frozen_stages=1, norm_eval=True)
    x = seeded_input((1, 3, 64, 64), seed=15)
    before = run(model, x)
    model.switch_to_deploy()
    assert_outputs_close(before, run(model.eval(), x), atol=1e-5)
    assert not any(p.requires_grad for p in model.patch_embed.parameters())
    assert all(p.requires_grad for p in model.layer_2.parameters())


# --------------------------------------------------------------------------
# channels-last
# --------------------------------------------------------------------------
def test_channels_last_same_outputs():
    model = seeded_model()
    plain = seeded_model(channels_last=False)
    x = seeded_input((2, 3, 50, 70), seed=16)
    fast = run(model, x)
    slow = run(plain, x)
    assert_outputs_close(fast, slow, atol=1e-5)
    assert all(
        o.is_contiguous(memory_format=torch.channels_last) for o in fast)
    # A channels-last input gives the same numbers as a contiguous one.
    assert_outputs_close(
        fast,
        run(model, x.contiguous(memory_format=torch.channels_last)),
        atol=0)


# --------------------------------------------------------------------------
# The attention mask follows the weights
# --------------------------------------------------------------------------
def test_mask_follows_weight_changes():
    model = seeded_model()
    x = seeded_input((1, 3, 64, 64), seed=18)
    reference = copy.deepcopy(model)
    run(model, x)  # fill the caches

    # load_state_dict
    new_state = seeded_state_dict(shapes_of(model), seed=4)
    model.load_state_dict(new_state)
    reference.load_state_dict(new_state)
    assert_outputs_close(run(model, x), run(reference, x), atol=0)

    # in-place parameter updates, as an optimiser step does
    with torch.no_grad():
        for m in (model, reference):
            for block in m.layer_2.blocks:
                block.attention_biases.add_(0.5)
                if block.num_cross:
                    block.s_token_bias.mul_(-2)
    assert_outputs_close(run(model, x), run(reference, x), atol=0)

    # a real optimiser step after training
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sum(o.sum() for o in model(x)).backward()
    opt.step()
    model.eval()
    fresh = copy.deepcopy(model)
    assert_outputs_close(run(model, x), run(fresh, x), atol=0)


def test_mask_follows_dtype_and_parameter_replacement():
    model = seeded_model()
    block = model.layer_2.blocks[1]
    x = seeded_input((1, 3, 64, 64), seed=19)
    run(model, x)
    old = block.attention_mask()
    block.attention_biases = torch.nn.Parameter(
        block.attention_biases.detach() + 1)
    assert not torch.equal(block.attention_mask(), old)
    assert block.attention_mask(torch.bfloat16).dtype == torch.bfloat16
    model.double()
    with torch.no_grad():
        outs = model(x.double())
    assert all(o.dtype == torch.float64 for o in outs)


def test_mask_shape_and_contents():
    block = seeded_model().layer_2.blocks[2]
    mask = block.attention_mask()
    tokens = block.window_size**2
    assert mask.shape == (1, block.num_heads, tokens,
                          tokens + block.num_cross)
    idxs = block.attention_bias_idxs
    torch.testing.assert_close(mask[0, :, :, :tokens],
                               block.attention_biases[:, idxs])
    torch.testing.assert_close(
        mask[0, :, 5, tokens:], block.s_token_bias[0, :, 0])
    assert 'attention_bias_idxs' not in block.state_dict()


# --------------------------------------------------------------------------
# with_cp and drop path still work on the fast paths
# --------------------------------------------------------------------------
def test_with_cp_and_drop_path_on_fast_path():
    x = seeded_input((2, 3, 61, 75), seed=20)
    results = []
    for with_cp in (False, True):
        torch.manual_seed(5)
        model = seeded_model(with_cp=with_cp, drop_path_rate=0.5).train()
        outs = model(x)
        sum((o * o).mean() for o in outs).backward()
        results.append(([o.detach() for o in outs], {
            n: p.grad
            for n, p in model.named_parameters() if p.grad is not None
        }))
    assert_outputs_close(results[0][0], results[1][0], atol=1e-5)
    for name, grad in results[0][1].items():
        torch.testing.assert_close(
            grad, results[1][1][name], rtol=1e-4, atol=1e-6, msg=name)


# --------------------------------------------------------------------------
# torch.compile
# --------------------------------------------------------------------------
def test_compile_without_graph_breaks():
    model = seeded_model()
    x = seeded_input((1, 3, 61, 75), seed=23)
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
    torch._dynamo.reset()
    compiled = torch.compile(model, backend='aot_eager', fullgraph=True)
    with torch.no_grad():
        assert_outputs_close(compiled(x), run(model, x), atol=1e-5)
    torch._dynamo.reset()


def test_compiled_inference_is_plain_and_frozen_compile_matches():
    """Compiled graphs get the plain operators (no oneDNN custom op, no
    MLP chunks, no folded weights), which inductor fuses; compiled
    under inductor's freezing (weights as constants: the CPU inference
    setting of the benchmark) the numbers are the eager ones."""
    import torch._inductor.config as inductor_config
    model = seeded_model()
    x = seeded_input((1, 3, 61, 75), seed=25)
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(str(gm.graph))
        return gm.forward

    with torch.no_grad():
        expected = run(model, x)
        assert_outputs_close(torch.compile(model, backend=backend)(x),
                             expected)
        assert len(graphs) == 1
        assert 'fcaformer_mm' not in graphs[0]
        assert 'mkldnn' not in graphs[0]
        assert graphs[0].count('batch_norm') > 0
        torch._dynamo.reset()
        with inductor_config.patch(freezing=True):
            compiled = torch.compile(model)
            assert_outputs_close(compiled(x), expected)
    torch._dynamo.reset()


def test_compile_training_step_without_graph_breaks():
    model = seeded_model(drop_path_rate=0.1).train()
    x = seeded_input((2, 3, 64, 64), seed=24)
    compiled = torch.compile(model, backend='aot_eager', fullgraph=True)
    outs = compiled(x)
    sum(o.mean() for o in outs).backward()
    assert model.layer_2.blocks[1].attention_biases.grad is not None
    torch._dynamo.reset()


# --------------------------------------------------------------------------
# Initialisation without temporaries
# --------------------------------------------------------------------------
@pytest.mark.parametrize('bounds', [(-2., 2.), (-0.03, 0.05)])
def test_trunc_normal_in_place(bounds):
    a, b = bounds
    torch.manual_seed(0)
    tensor = torch.empty(200, 500)
    ptr = tensor.data_ptr()
    assert trunc_normal_(tensor, std=0.02, a=a, b=b) is tensor
    assert tensor.data_ptr() == ptr
    assert tensor.min() >= a and tensor.max() <= b
    # A normal draw where the bounds are far (+-100 std), torch's inverse
    # CDF where they are close (std of the truncated draw is smaller).
    std = tensor.std().item()
    assert std == pytest.approx(0.02, rel=0.02) if a == -2. else std < 0.019
    assert tensor.mean().abs() < 1e-3 if a == -2. else tensor.mean() > 0
