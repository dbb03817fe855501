"""Lean blocks: the same outputs as the plain ones for any chunking, bit-identical streamed vs resident,
and a fake-tensor memory estimate that matches real allocations."""

import dataclasses

import pytest
import torch
from torch.func import functional_call

from hystream.families.hunyuan_video.config import DiTConfig
from hystream.families.hunyuan_video.dit import HunyuanVideoDiT
from hystream.families.hunyuan_video.memory import forward_peak_bytes
from hystream.loading import load_dit
from hystream.memory_probe import LiveBytes
from tiny_dit import dit_inputs, save_layout


@pytest.fixture(scope="module")
def path(tmp_path_factory, tiny_dit_sd):
    return save_layout(tiny_dit_sd, "comfy", str(tmp_path_factory.mktemp("lean")))[0]


@pytest.mark.parametrize("batch,valid", [(1, (8,)), (2, (8, 5))])
@pytest.mark.parametrize("mlp_piece,rope_rows", [(None, None), (256, 5), (384, 1)])
def test_lean_equals_plain_for_any_chunking(path, batch, valid, mlp_piece, rope_rows, monkeypatch):
    """Any token chunking, any MLP piece (1024 hidden units: one piece, four, or 384 + 384 + 256) and any
    RoPE slice: the plain blocks' output."""
    from hystream.models import lean

    if mlp_piece:
        monkeypatch.setattr(lean, "MLP_PIECE", mlp_piece)
        monkeypatch.setattr(lean, "ROPE_ROWS", rope_rows)
    inputs = dit_inputs(batch, valid=valid)
    dit = load_dit(path)
    try:
        with torch.no_grad():
            dit.model.lean = False
            plain = dit(**inputs)
            dit.model.lean = True
            for chunk in (None, 5, 7, 13, 1000):  # 36 image + 8/12 text tokens: 1 to 10 chunks
                dit.model.chunk_tokens = chunk
                assert (dit(**inputs) - plain).abs().max().item() <= 1e-5, chunk
    finally:
        dit.close()


def test_lean_streamed_bit_identical_to_resident(path):
    inputs = dit_inputs(1)
    outs = []
    for resident in (None, "all"):
        dit = load_dit(path, resident_blocks=resident, prefetch_blocks=2)
        dit.model.chunk_tokens = 7
        try:
            with torch.no_grad():
                outs.append(dit(**inputs))
        finally:
            dit.close()
    assert torch.equal(*outs)


def test_fake_estimate_matches_a_real_run():
    """The planner's fake-tensor peak equals the bytes a real run allocates (same model, same sizes,
    weights excluded): counted on real CPU tensors with the same flash-style attention stand-in."""
    from hystream.memory_probe import flash_attention

    cfg = dataclasses.replace(DiTConfig(), hidden=256, heads=2, mlp_hidden=1024, single_mlp_hidden=1024,
                              refiner_mlp_hidden=1024, text_dim=64, pooled_dim=32, depth_refiner=1,
                              depth_double=1, depth_single=1)
    shape, text = (1, 16, 3, 16, 24), 20
    for lean, chunk in ((True, 64), (False, None)):
        estimate = forward_peak_bytes(cfg, shape, text, torch.float32, lean, chunk, "cpu")
        with torch.device("meta"):
            model = HunyuanVideoDiT(cfg)
        model.lean, model.chunk_tokens = lean, chunk
        g = torch.Generator().manual_seed(0)
        params = {n: torch.randn(p.shape, generator=g) * 0.02 for n, p in model.named_parameters()}
        inputs = {"x": torch.randn(shape), "timestep": torch.tensor([500.0]), "txt": torch.randn(1, text, 64),
                  "pooled": torch.randn(1, 32), "guidance": torch.tensor([6000.0])}
        probe = LiveBytes(existing=[*params.values(), *inputs.values()])
        with flash_attention(), torch.no_grad(), probe:
            functional_call(model, params, (), inputs)
        assert abs(probe.peak - estimate) <= 0.01 * estimate, (lean, probe.peak, estimate)


def test_lean_needs_a_fraction_of_the_plain_memory():
    shape = (1, 16, 33, 48, 64)  # 384×512×129
    plain = forward_peak_bytes(DiTConfig(), shape, 256, torch.bfloat16, False, None)
    lean = forward_peak_bytes(DiTConfig(), shape, 256, torch.bfloat16, True, None)
    assert lean < 0.2 * plain


@pytest.mark.parametrize("weights,extra_gib", [(torch.float8_e4m3fn, 0.1), ("Q8_0", 0.1), ("Q4_K", 0.125)])
def test_at_720p_only_the_residual_keys_and_values_are_whole(weights, extra_gib):
    """720p × 129 with an fp8 or a GGUF file: the activation peak is the residual stream, the keys and the
    values (3 × [N, hidden] bf16) plus chunk temporaries and a few pieces of upcast or decoded weights —
    not a whole upcast matrix, an MLP hidden, a fused qkv or a whole-length fp32 copy (holding the single
    block's upcast MLP weight through the token loop alone adds 0.07 GiB; K-quants decode with ~5 float32
    copies of a slab, hence their larger allowance)."""
    cfg, shape = DiTConfig(), (1, 16, 33, 90, 160)
    tokens = 33 * 45 * 80 + 256
    floor = 3 * tokens * cfg.hidden * 2
    peak = forward_peak_bytes(cfg, shape, 256, torch.bfloat16, True, None, "cuda", "flash", weights)
    assert floor < peak <= floor + extra_gib * 2 ** 30, (weights, (peak - floor) / 2 ** 30)


def whole_rope_table(grid, axes_dim, theta):
    """The reference's cos/sin [t·h·w, D]: angles of every token's coordinates in float64, then fp32."""
    coords = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in grid], indexing="ij")
    cos_parts, sin_parts = [], []
    for pos, dim in zip(coords, axes_dim):
        freqs = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64)[: dim // 2] / dim))
        angles = torch.outer(pos.reshape(-1), freqs)
        cos_parts.append(angles.cos().repeat_interleave(2, dim=1))
        sin_parts.append(angles.sin().repeat_interleave(2, dim=1))
    return torch.cat(cos_parts, dim=1).float(), torch.cat(sin_parts, dim=1).float()


def test_grid_rope_rows_equal_the_whole_table():
    """The lean path's per-axis RoPE (rows assembled per chunk) is the whole table's rows, bit for bit."""
    from hystream.models.rope import grid_rope

    grid, axes = (3, 5, 7), (4, 6, 6)
    cos, sin = whole_rope_table(grid, axes, 256.0)
    gcos, gsin = grid_rope(grid, axes, 256.0)
    assert len(gcos) == 105
    for a, b in ((0, 105), (0, 1), (13, 51), (100, 105), (34, 35)):
        assert torch.equal(gcos[a:b], cos[a:b]) and torch.equal(gsin[a:b], sin[a:b]), (a, b)
