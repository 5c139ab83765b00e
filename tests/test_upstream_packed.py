"""The packed execution (issue 23): the folded conv → group norm equals the plain layers, values and gradients;
equal-length batches (run together) equal each utterance alone; pack/unpack round-trip."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.fixtures.upstreams import perturb_, random_wavs, tiny_config
from upstream.builtin import random_upstream
from upstream.front_ends import ConvLayerBlock
from upstream.kernels import pack, unpack


def reference_block(block: ConvLayerBlock, x: torch.Tensor) -> torch.Tensor:
    """conv → nn.GroupNorm(C, C) → GELU, as fairseq/transformers compute it on an unpadded batch."""
    y = block.conv(x)
    norm = block.layer_norm
    return F.gelu(F.group_norm(y, y.shape[1], norm.weight, norm.bias, norm.eps))


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("bias", [False, True])
def test_folded_group_norm_matches_conv_then_group_norm(batch, bias):
    torch.manual_seed(0)
    block = perturb_(ConvLayerBlock(1, 16, 10, 5, bias, "group_norm"), seed=1, scale=0.3)
    x = (torch.randn(batch, 1, 4000) * 0.1 + 0.02).requires_grad_(True)
    ours = block(x)
    ref = reference_block(block, x)
    assert ours.shape == ref.shape == (batch, 16, 799)
    assert (ours - ref).abs().max().item() < 1e-5
    weights = torch.randn_like(ref)
    grads = torch.autograd.grad((ours * weights).sum(), [x, *block.parameters()])
    ref_grads = torch.autograd.grad((ref * weights).sum(), [x, *block.parameters()])
    scale = max(r.abs().max().item() for r in ref_grads)  # a conv bias's gradient is 0 up to rounding
    for g, r in zip(grads, ref_grads):
        assert (g - r).abs().max().item() < 1e-5 * scale


def test_conv_block_shorter_than_kernel_gives_no_frames():
    block = ConvLayerBlock(1, 8, 10, 5, False, "group_norm")
    assert block(torch.randn(2, 1, 9)).shape == (2, 8, 0)


@pytest.mark.parametrize("changes", [dict(), dict(extractor_mode="layer_norm", conv_bias=True, layer_norm_first=True)])
def test_equal_lengths_run_together_equal_each_alone(changes):
    up = random_upstream(tiny_config(**changes))
    perturb_(up, seed=7)
    wavs = random_wavs([6000, 6000, 6000], seed=3)
    batched = up(wavs)
    for b, wav in enumerate(wavs):
        alone = up([wav])
        for h_alone, h_batch in zip(alone.hidden_states, batched.hidden_states):
            assert (h_alone[0] - h_batch[b]).abs().max().item() < 1e-5


def test_pack_unpack_round_trip():
    lengths = torch.tensor([3, 0, 5])
    padded = torch.randn(3, 6, 2)
    packed = pack(padded, lengths)
    assert packed.shape == (8, 2) and torch.equal(packed[:3], padded[0, :3]) and torch.equal(packed[3:], padded[2, :5])
    back = unpack(packed, lengths, 6)
    assert torch.equal(back[0, :3], padded[0, :3]) and back[1].abs().max() == 0 and back[0, 3:].abs().max() == 0


def test_training_gradients_do_not_depend_on_the_batch():
    """A loss on utterance 0 gives the same parameter gradients whether it is trained alone or beside another."""
    up = random_upstream(tiny_config(dropout=0.0, attention_dropout=0.0, feat_proj_dropout=0.0))
    model = perturb_(up.model, seed=2)
    wavs = random_wavs([5000, 9000], seed=4)

    def grads(batch: list[torch.Tensor]) -> list[torch.Tensor]:
        padded = torch.nn.utils.rnn.pad_sequence(batch, batch_first=True)
        states, frames = model.encode(padded, torch.tensor([w.numel() for w in batch]))
        loss = states[-1][0, : int(frames[0])].square().sum()
        return torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad], allow_unused=True)

    for a, b in zip(grads(wavs[:1]), grads(wavs)):
        if a is None:
            assert b is None or b.abs().max() == 0
        else:
            assert (a - b).abs().max().item() < 1e-4 * max(1.0, a.abs().max().item())


def test_padded_attention_with_key_mask_equals_packed():
    """The padded interface (for traced graphs, e.g. ONNX export) gives the packed path's values on valid frames."""
    from upstream.components import EncoderLayer
    from upstream.kernels import valid_mask

    torch.manual_seed(0)
    layer = perturb_(EncoderLayer(16, 32, 4, False, 0.0, 0.0, 0.0), seed=3).eval()
    lengths = torch.tensor([7, 3, 5])
    padded = torch.randn(3, 7, 16)
    packed_out = layer(pack(padded, lengths), lengths=lengths.tolist())
    padded_out = layer(padded, valid_mask(lengths, 7))
    assert (pack(padded_out, lengths) - packed_out).abs().max().item() < 1e-5
    with pytest.raises(ValueError, match="needs the utterance lengths"):
        layer(pack(padded, lengths))


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")
def test_onednn_kernels_match_torch_defaults():
    """The oneDNN CPU path (fused GELU epilogues, oneDNN GEMMs) gives torch's default ops' values and gradients."""
    from upstream.kernels import linear, set_onednn

    up = random_upstream(tiny_config(pred_layer_ids=(1, 2)), include_pred_heads=True)
    perturb_(up, seed=8)
    wavs = random_wavs([5000, 12000, 3000], seed=5)
    old = set_onednn(True)
    try:
        fast = up(wavs).hidden_states
        set_onednn(False)
        plain = up(wavs).hidden_states
    finally:
        set_onednn(old)
    for a, b in zip(fast, plain):
        assert (a - b).abs().max().item() < 1e-5
    torch.manual_seed(0)
    x, w, bias = torch.randn(7, 5, requires_grad=True), torch.randn(4, 5, requires_grad=True), torch.randn(4)
    bias.requires_grad_(True)
    weights = torch.randn(7, 4)
    old = set_onednn(True)
    try:
        got = torch.autograd.grad((linear(x, w, bias, gelu=True) * weights).sum(), [x, w, bias])
    finally:
        set_onednn(old)
    ref = torch.autograd.grad((F.gelu(F.linear(x, w, bias)) * weights).sum(), [x, w, bias])
    for g, r in zip(got, ref):
        assert (g - r).abs().max().item() < 1e-5


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")
@pytest.mark.parametrize("kernel,stride", [(3, 2), (2, 2), (4, 2), (5, 3)])
@pytest.mark.parametrize("time", [None, 0, 1, 2, 37])  # None: exactly one kernel; else kernel + extra frames
def test_channels_last_conv_gemms_match_conv1d(kernel, stride, time):
    """conv1d_gelu_channels_last (the CNN's later layers as GEMMs on strided views) equals GELU(conv1d) for every
    length, including views that start inside a larger tensor (a storage offset) and inputs one kernel long."""
    from upstream.kernels import conv1d_gelu_channels_last, conv_gemm_applies

    torch.manual_seed(0)
    n = kernel + (time or 0)
    weight, bias = torch.randn(6, 5, kernel), torch.randn(6)
    whole = torch.randn(n + 3, 5)
    x = whole[3:]  # storage offset 15
    assert conv_gemm_applies(x, weight, bias, stride)
    for b in (None, bias):
        got = conv1d_gelu_channels_last(x, weight, b, stride)
        ref = F.gelu(F.conv1d(x.t()[None], weight, b, stride=stride))[0].t()
        assert got.shape == ref.shape == ((n - kernel) // stride + 1, 6)
        assert (got - ref).abs().max().item() < 1e-5
