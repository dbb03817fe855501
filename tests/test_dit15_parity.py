"""HunyuanVideo 1.5's DiT, loaded from every real layout, computes what diffusers computes on the same weights."""

import pytest
import torch

from hystream.loading import load_dit
from hystream.models.token_refiner import RefinerBlock
from tiny_dit15 import (
    TINY15,
    dequantised,
    diffusers_model,
    dit_inputs,
    meanflow_config,
    reference_forward,
    save_layout,
    tencent_state_dict,
)

LAYOUTS = {"tencent": "Tencent (split q/k/v)", "comfy": "Comfy-Org repackaged (fused q/k/v)",
           "comfy_prefixed": "Comfy-Org repackaged (fused q/k/v) under 'model.diffusion_model.'",
           "diffusers": "diffusers (transformer/ folder)", "fp8_scaled": "Comfy-Org repackaged (fused q/k/v)"}
CASES = {"t2v, batch 1 with padding": {"batch": 1, "valid": (8,), "glyph_valid": (5,)},
         "i2v, batch 1": {"batch": 1, "valid": (12,), "glyph_valid": (7,), "image": True},
         "no glyph text": {"batch": 1, "valid": (8,), "glyph_valid": (0,)},
         "batch 2, different lengths": {"batch": 2, "valid": (8, 5), "glyph_valid": (5, 2), "image": True}}


@pytest.fixture(scope="module")
def sd():
    return tencent_state_dict()


@pytest.fixture(scope="module")
def reference(sd):
    return diffusers_model(sd)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, sd):
    return {layout: save_layout(sd, layout, str(tmp_path_factory.mktemp(layout))) for layout in LAYOUTS}


def run(path, inputs, **kw):
    dit = load_dit(path, **kw)
    try:
        with torch.no_grad():
            return dit(**inputs), dit
    finally:
        dit.close()


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_layout_equals_diffusers(saved, sd, reference, layout):
    inputs = dit_inputs(**CASES["i2v, batch 1"])
    if layout in ("comfy", "fp8_scaled"):  # stored in fp16 / fp8: compare with those weights
        reference = diffusers_model(dequantised(saved[layout]) if layout == "fp8_scaled"
                                    else {k: v.half().float() for k, v in sd.items()})
    got, dit = run(saved[layout], inputs)
    want = reference_forward(reference, inputs)
    assert dit.family.name == "hunyuan_video_15" and dit.layout == LAYOUTS[layout]
    assert (got - want).abs().max().item() <= 1e-5 * max(1.0, want.abs().max().item()), layout


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("lean", [True, False], ids=["lean", "plain"])
def test_inputs_equal_diffusers(saved, reference, case, lean):
    inputs = dit_inputs(**CASES[case])
    dit = load_dit(saved["tencent"])
    try:
        dit.model.lean = lean
        dit.model.chunk_tokens = 16  # several chunks, boundaries inside the image tokens
        with torch.no_grad():
            got = dit(**inputs)
    finally:
        dit.close()
    want = reference_forward(reference, inputs)
    assert got.shape == want.shape == (inputs["x"].shape[0], 32, *inputs["x"].shape[2:])
    assert (got - want).abs().max().item() <= 1e-5 * max(1.0, want.abs().max().item()), case


def test_meanflow_sums_the_two_timestep_embeddings(tmp_path):
    """The step-distilled model's time_r_in: its embedding of the next timestep is added (not averaged)."""
    cfg = meanflow_config()
    sd = tencent_state_dict(cfg, seed=3)
    path = save_layout(sd, "comfy_prefixed", str(tmp_path), cfg)
    inputs = dit_inputs(**CASES["i2v, batch 1"])
    got, dit = run(path, dict(inputs, timestep_r=torch.tensor([500.0])))
    assert dit.config.meanflow
    want = reference_forward(diffusers_model(sd, cfg), inputs, timestep_r=torch.tensor([500.0]))
    assert (got - want).abs().max().item() <= 1e-5 * max(1.0, want.abs().max().item())


def test_streamed_equals_resident(saved):
    inputs = dit_inputs(**CASES["batch 2, different lengths"])
    streamed, _ = run(saved["comfy_prefixed"], inputs, prefetch_blocks=2)
    resident, dit = run(saved["comfy_prefixed"], inputs, resident_blocks="all")
    assert torch.equal(streamed, resident)
    assert dit.units.blocks() == TINY15.streamed_blocks == 4
    # the refiner's blocks stream matrix by matrix, the double blocks as their four parts (offload/units.py)
    assert dit.streamer.block_count() == TINY15.depth_refiner * len(RefinerBlock.CALL_ORDER) + 4 * TINY15.depth


def test_config_is_read_from_the_file(saved):
    from hystream.loading import read_dit_config

    family, cfg = read_dit_config(saved["diffusers"])
    assert family.name == "hunyuan_video_15" and cfg == TINY15
