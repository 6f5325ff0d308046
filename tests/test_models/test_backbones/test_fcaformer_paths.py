"""FcaFormer's one computation, checked from several sides.

Golden outputs of the official code in eval mode, deployed (fused Conv-BN
and layer scales) and on contiguous maps; the fused attention against an
explicit softmax (outputs, gradients, bfloat16); window partition and the
attention mask; ``switch_to_deploy``; layers whose weights a forward
pre-hook computes (pruning, weight norm); ``torch.compile`` without graph
breaks.
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

from fcaformer_mm.analysis.seeded import seeded_model as shared_seeded_model
from fcaformer_mm.models.backbones.fcaformer import FcaFormer
from fcaformer_mm.models.utils import windows
from fcaformer_mm.models.utils.layers import trunc_normal_


def seeded_model(**kwargs) -> FcaFormer:
    return shared_seeded_model(TINY, **kwargs)


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
@pytest.mark.parametrize('path', ['eval', 'deploy', 'contiguous'])
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
    outs = run(model, seeded_input(tuple(case['input_shape']),
                                   case['input_seed']))
    for out, expected in zip(outs, case['outputs']):
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-4)


# --------------------------------------------------------------------------
# SDPA against explicit attention, also in training and in backward
# --------------------------------------------------------------------------
def explicit_attention(block, x, cross):
    """The test oracle: the FCA block's attention with the cross tokens
    projected by the whole ``qkv`` (queries dropped) and one explicit
    softmax over window and cross keys, as the official code writes it."""
    heads, dim = block.num_heads, block.dim
    qkv = block.qkv(x)
    q, k, v = qkv.reshape(*x.shape[:2], 3, heads, -1).permute(2, 0, 3, 1, 4)
    mask = block.attention_biases[:, windows.relative_offset_index(
        block.window_size)]
    if cross is not None:
        cross = block.s_norm(cross * block.s_scale_factors)
        _, k_s, v_s = block.qkv(cross).reshape(
            *cross.shape[:2], 3, heads, -1).permute(2, 0, 3, 1, 4)
        k, v = torch.cat((k, k_s), 2), torch.cat((v, v_s), 2)
        mask = torch.cat((mask, block.s_token_bias[0].expand(
            -1, mask.shape[1], -1)), -1)
    attn = (q @ k.transpose(-2, -1)) * block.scale + mask
    out = attn.softmax(-1) @ v
    return out.transpose(1, 2).reshape(*x.shape[:2], dim)


@pytest.mark.parametrize('block_index', [0, 2])
def test_attention_matches_explicit_softmax(block_index):
    block = seeded_model().layer_2.blocks[block_index]
    gen = torch.Generator().manual_seed(block_index)
    x = torch.randn(3, block.window_size**2, block.dim, generator=gen,
                    requires_grad=True)
    cross = torch.randn(3, block.num_cross, block.dim, generator=gen,
                        requires_grad=True) if block.num_cross else None
    got = block.attention(x, cross)
    expected = explicit_attention(block, x, cross)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    weight = torch.randn(got.shape, generator=gen)
    names = ['qkv.weight', 'qkv.bias', 'attention_biases']
    if cross is not None:
        names += ['s_token_bias', 's_scale_factors', 's_norm.weight']
    params = dict(block.named_parameters())
    inputs = [x] + [params[n] for n in names]
    inputs += [cross] if cross is not None else []
    grads = torch.autograd.grad((got * weight).sum(), inputs)
    expected_grads = torch.autograd.grad((expected * weight).sum(), inputs)
    for a, b in zip(grads, expected_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_attention_in_bfloat16_autocast():
    block = seeded_model().layer_2.blocks[1]
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, block.window_size**2, block.dim, generator=gen)
    cross = torch.randn(2, block.num_cross, block.dim, generator=gen)
    with torch.no_grad():
        expected = explicit_attention(block, x, cross)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            got = block.attention(x, cross)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected, rtol=0, atol=0.05)


# --------------------------------------------------------------------------
# Padding and window partition
# --------------------------------------------------------------------------
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
    got = windows.attention_mask(
        biases, windows.mask_index(window_size, num_cross), token_bias)
    assert got.shape == (1, heads, tokens, tokens + num_cross)
    assert got.is_contiguous() and torch.equal(got, expected)
    weight = torch.randn(expected.shape, generator=gen, dtype=torch.float64)
    grads = torch.autograd.grad((got * weight).sum(), (biases, token_bias))
    expected_grads = torch.autograd.grad((expected * weight).sum(),
                                         (biases, token_bias))
    for a, b in zip(grads, expected_grads):
        torch.testing.assert_close(a, b)


def test_offset_index_is_a_plain_buffer_of_each_block():
    """Each block holds the official (N, N) offset index, extended by one
    column per cross key (its entry of the combined bias table)."""
    model = FcaFormer('l1')
    for stage in (model.layer_2, model.layer_3):
        tokens = stage.window_size**2
        for block in stage.blocks:
            index = block.attention_bias_idxs
            assert index.shape == (tokens, tokens + block.num_cross)
            assert torch.equal(
                index[:, :tokens].long(),
                windows.relative_offset_index(stage.window_size))
            assert torch.equal(
                index[3, tokens:].long(),
                torch.arange(tokens, tokens + block.num_cross))
    assert not any('attention_bias_idxs' in k for k in model.state_dict())
    assert model.double().layer_2.blocks[1].attention_bias_idxs.dtype == \
        torch.int32


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
    idxs = windows.relative_offset_index(block.window_size)
    torch.testing.assert_close(mask[0, :, :, :tokens],
                               block.attention_biases[:, idxs])
    torch.testing.assert_close(
        mask[0, :, 5, tokens:], block.s_token_bias[0, :, 0])
    assert 'attention_bias_idxs' not in block.state_dict()


# --------------------------------------------------------------------------
# with_cp and drop path
# --------------------------------------------------------------------------
def test_with_cp_and_drop_path():
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


# --------------------------------------------------------------------------
# Weights computed by forward pre-hooks
# --------------------------------------------------------------------------
def test_pruned_and_weight_normed_layers_are_current():
    """Every layer is called as its module, so forward pre-hooks that make
    the weight (pruning, hook-based weight norm) run before it is read,
    also after the underlying parameters change."""
    from torch.nn.utils import prune
    model = seeded_model()
    x = seeded_input((1, 3, 64, 64), seed=30)
    block = model.layer_2.blocks[2]  # has cross tokens: reads qkv.weight
    prune.l1_unstructured(block.qkv, 'weight', amount=0.3)
    prune.l1_unstructured(model.layer_0.blocks[0].pwconv1, 'weight', 0.5)
    with pytest.warns(FutureWarning):
        torch.nn.utils.weight_norm(block.mlp.fc1)
    run(model, x)
    with torch.no_grad():  # as an optimiser step changes the originals
        block.qkv.weight_orig.mul_(-1.5)
        block.mlp.fc1.weight_v.add_(0.3)
        model.layer_0.blocks[0].pwconv1.weight_orig.add_(0.2)
    got = run(model, x)
    plain = copy.deepcopy(model)
    prune.remove(plain.layer_2.blocks[2].qkv, 'weight')
    prune.remove(plain.layer_0.blocks[0].pwconv1, 'weight')
    torch.nn.utils.remove_weight_norm(plain.layer_2.blocks[2].mlp.fc1)
    before = [o.clone() for o in got]
    assert_outputs_close(got, run(plain, x), atol=1e-6)
    # and the changes did matter
    fresh = seeded_model()
    assert (before[-1] - run(fresh, x)[-1]).abs().max() > 1e-3


def test_deploy_leaves_held_tensors_alone():
    """Folding makes new tensors: a state-dict snapshot taken before
    deploy and a model sharing the tensors keep their values."""
    model = seeded_model()
    x = seeded_input((1, 3, 64, 64), seed=31)
    snapshot = model.state_dict()
    saved = {k: v.clone() for k, v in snapshot.items()}
    twin = seeded_model()
    twin.load_state_dict(snapshot, assign=True)
    expected = run(twin, x)
    model.switch_to_deploy()
    for key, value in snapshot.items():
        assert torch.equal(value, saved[key]), key
    assert_outputs_close(run(twin, x), expected, atol=0)
    assert_outputs_close(run(model, x), expected, atol=1e-5)
