"""The DiT loaded from every real layout computes what diffusers computes on the same weights."""

import pytest
import torch

from hystream.loading import load_dit
from tiny_dit import TINY, diffusers_model, dit_inputs, reference_forward, save_layout

LAYOUTS = {
    "tencent": "Tencent / kijai",
    "comfy": "Comfy-Org repackaged",
    "diffusers": "diffusers",
    "fp8_scaled": "Comfy-Org repackaged",
    "fp8": "Tencent / kijai",
    "pt": "Tencent / kijai",
}
CASES = [(1, (8,)), (2, (8, 5))]  # batch 1 with padding; batch 2 with different valid lengths


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_dit_sd, tiny_dit_reference):
    out = {}
    for layout in LAYOUTS:
        path, weights = save_layout(tiny_dit_sd, layout, str(tmp_path_factory.mktemp(layout)))
        ref = tiny_dit_reference if weights is tiny_dit_sd else diffusers_model(weights)
        out[layout] = (path, ref)
    return out


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("batch,valid", CASES)
def test_matches_diffusers(saved, layout, batch, valid):
    """fp32 parity ≤ 1e-5; fp8 layouts are compared with diffusers on the same dequantised weights."""
    path, ref = saved[layout]
    inputs = dit_inputs(batch, valid=valid)
    want = reference_forward(ref, inputs)
    dit = load_dit(path)
    try:
        assert dit.layout.startswith(LAYOUTS[layout])
        with torch.no_grad():
            got = dit(**inputs)
    finally:
        dit.close()
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= 1e-5
    assert want.abs().max().item() > 1.0  # a real signal, not zeros


def test_padding_is_ignored(saved):
    """Batch 1: changing the padded text states (or dropping the padding) does not change the output."""
    path, _ = saved["tencent"]
    inputs = dit_inputs(1, valid=(8,))
    dit = load_dit(path)
    try:
        with torch.no_grad():
            base = dit(**inputs)
            noisy = dict(inputs, txt=inputs["txt"].clone())
            noisy["txt"][:, 8:] = 1e3
            trimmed = dict(inputs, txt=inputs["txt"][:, :8], txt_mask=None)
            assert torch.equal(dit(**noisy), base)
            assert (dit(**trimmed) - base).abs().max().item() <= 1e-5
    finally:
        dit.close()


def test_streamed_equals_resident(saved):
    path, _ = saved["comfy"]
    inputs = dit_inputs(2, valid=(8, 5))
    outs = []
    for resident in (None, "all", [0, 3]):
        dit = load_dit(path, resident_blocks=resident)
        try:
            with torch.no_grad():
                outs.append(dit(**inputs))
        finally:
            dit.close()
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_config_read_from_shapes(saved):
    dit = load_dit(saved["diffusers"][0])
    try:
        cfg = dit.config
        assert (cfg.hidden, cfg.heads, cfg.depth_double, cfg.depth_single, cfg.depth_refiner) == (256, 2, 2, 3, 2)
        assert (cfg.text_dim, cfg.pooled_dim, cfg.in_channels, cfg.out_channels) == (32, 24, 16, 16)
        assert cfg.patch == (1, 2, 2) and cfg.guidance_embed and cfg.mlp_hidden == 1024
    finally:
        dit.close()


def test_fp8_stays_fp8_in_the_stream(saved):
    dit = load_dit(saved["fp8_scaled"][0])
    try:
        units = dit.units.of_block(TINY.depth_refiner)  # the first double block, streamed as its parts
        dtypes = {s.name: s.dtype for u in units for s in dit.streamer.layout(u).slots}
        assert dtypes["img_attn_qkv.weight"] == torch.float8_e4m3fn
        assert dtypes["img_attn_qkv.scale_weight"] == torch.float32
        assert dtypes["img_attn_q_norm.weight"] == torch.float32
    finally:
        dit.close()


def test_weight_dtype_fp8_quantises_on_the_fly(saved, tiny_dit_sd):
    """weight_dtype=fp8_e4m3fn on a float file: block Linear weights stored as fp8, output = diffusers
    on the fp8-rounded weights."""
    path, _ = saved["tencent"]
    from tiny_dit import quantise_plain_fp8

    _, deq = quantise_plain_fp8(tiny_dit_sd)
    inputs = dit_inputs(1)
    want = reference_forward(diffusers_model(deq), inputs)
    dit = load_dit(path, weight_dtype="fp8_e4m3fn")
    try:
        assert {s.dtype for s in dit.streamer.layout(dit.streamer.block_count() - 1).slots if s.name == "linear1.weight"} == {torch.float8_e4m3fn}
        with torch.no_grad():
            got = dit(**inputs)
    finally:
        dit.close()
    assert (got - want).abs().max().item() <= 1e-5
