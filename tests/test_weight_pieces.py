"""A piece of a weight as used equals that piece of the whole weight as used: the lean blocks take fused
and wide matrices a piece at a time (rows of the fused projections, input columns of the output
projections) so only a piece is ever upcast, scaled, decoded or LoRA-merged. Every storage is checked
against the whole matrix (bf16 views, scaled fp8, GGUF on and off its block boundaries, LoRA), and the
sliced RMSNorm against its whole-tensor formula."""

import numpy as np
import pytest
import torch

from hystream.models.layers import Linear, LowRankAdapter, RMSNorm
from hystream.quant.kinds import KINDS
from tiny_gguf import quantise

OUT, IN = 96, 512  # IN: two K-quant blocks
PIECES = [((0, OUT), (0, IN)), ((8, 40), (0, 256)), ((0, OUT), (256, IN)), ((5, 77), (32, 96)),
          ((0, 3), (16, 80)), ((90, OUT), (200, 300))]  # the last three are off a K-quant's 256 boundaries


def linear(storage: str, lora: bool = False) -> Linear:
    g = torch.Generator().manual_seed(1)
    values = torch.randn(OUT, IN, generator=g) * 0.05
    lin = Linear(IN, OUT)
    lin.bias = torch.nn.Parameter(torch.randn(OUT, generator=g), requires_grad=False)
    if storage == "bf16":
        lin.weight = torch.nn.Parameter(values.bfloat16(), requires_grad=False)
    elif storage == "fp8":
        lin.weight = torch.nn.Parameter(values.to(torch.float8_e4m3fn), requires_grad=False)
        lin.scale_weight = torch.tensor(0.37)
    else:
        lin.quant = KINDS[storage]
        data = quantise(values.numpy(), storage)
        lin.weight = torch.nn.Parameter(torch.from_numpy(np.ascontiguousarray(data)), requires_grad=False)
    if lora:  # an adapter on a row range of the weight, as on one projection of a fused qkv
        lin.lora = [LowRankAdapter(torch.randn(4, IN, generator=g), torch.randn(50, 4, generator=g), 0.3,
                                   (20, 70), "cpu", torch.float32)]
    return lin


@pytest.mark.parametrize("storage", ["bf16", "fp8", "Q8_0", "Q4_1", "Q4_K", "Q6_K"])
@pytest.mark.parametrize("lora", [False, True])
def test_a_piece_equals_the_piece_of_the_whole(storage, lora):
    lin = linear(storage, lora)
    stored = lin.weight.clone()
    whole = lin.compute_weight(torch.float32)
    for (a, b), (c, d) in PIECES:
        got = lin.compute_weight(torch.float32, (a, b), (c, d))
        assert got.shape == (b - a, d - c)
        assert torch.equal(got, whole[a:b, c:d]), (storage, lora, (a, b), (c, d))
        assert torch.equal(lin.compute_bias(torch.float32, (a, b)), lin.bias[a:b])
    assert torch.equal(lin.weight, stored)  # the stored weight is never modified in place
    if lora:  # and the adapter did something, on its rows only
        plain = linear(storage).compute_weight(torch.float32)
        assert (whole[20:70] - plain[20:70]).abs().max() > 1e-2
        assert torch.equal(whole[:20], plain[:20]) and torch.equal(whole[70:], plain[70:])


def test_a_bf16_piece_is_a_view_of_the_stored_weight():
    """Stored in the compute dtype, a piece costs nothing: the lean blocks take weights per chunk."""
    lin = linear("bf16")
    piece = lin.compute_weight(torch.bfloat16, (8, 40), (64, IN))
    assert piece.untyped_storage().data_ptr() == lin.weight.untyped_storage().data_ptr()


def test_row_pieces_of_a_projection_equal_its_output():
    lin = linear("fp8")
    x = torch.randn(3, IN)
    assert torch.allclose(torch.cat(lin.in_row_pieces(x, 32), -1), lin(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sliced_rms_norm_equals_the_whole_tensor_formula(dtype, monkeypatch):
    from hystream.models import layers

    norm = RMSNorm(48)
    norm.weight = torch.nn.Parameter(torch.randn(48), requires_grad=False)
    x = (torch.randn(2, 37, 3, 48) * 5).to(dtype)
    kept = x.clone()
    xf = x.float()
    want = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + norm.eps)).to(dtype) * norm.weight.to(dtype)
    for values in (1 << 21, 48 * 7, 50):  # one slice; slices of 7 rows; a slice smaller than a row
        monkeypatch.setattr(layers, "NORM_SLICE_VALUES", values)
        assert torch.equal(norm(x), want), values
        assert torch.equal(x, kept)  # the input is never written (an fp32 x included)
