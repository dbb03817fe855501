"""The image-to-video DiTs: HunyuanVideo-I2V latent concat (33 input channels), SkyReels-I2V (32) and
HunyuanVideo-I2V token replace (16: the first latent frame modulated with t = 0) compute what diffusers'
transformer computes with the same weights; lean (any chunking, boundaries inside a chunk) equals plain;
streamed equals resident."""

import dataclasses

import pytest
import torch

from hystream.loading import load_dit
from tiny_dit import TINY, diffusers_model, dit_inputs, reference_forward, save_layout, tencent_state_dict

VARIANTS = {  # name: (input channels, diffusers' image_condition_type, token replace)
    "latent_concat": (33, "latent_concat", False),
    "skyreels": (32, None, False),
    "token_replace": (16, "token_replace", True),
}


@pytest.fixture(scope="module", params=list(VARIANTS))
def variant(request, tmp_path_factory):
    channels, kind, replace = VARIANTS[request.param]
    cfg = dataclasses.replace(TINY, in_channels=channels)
    sd = tencent_state_dict(cfg, seed=3)
    path = save_layout(sd, "comfy", str(tmp_path_factory.mktemp(request.param)), cfg)[0]
    return {"name": request.param, "cfg": cfg, "sd": sd, "path": path, "kind": kind, "replace": replace}


def first_tokens(inputs, v):
    x = inputs["x"]
    return (x.shape[3] // 2) * (x.shape[4] // 2) if v["replace"] else 0


def test_matches_diffusers(variant):
    inputs = dit_inputs(2, variant["cfg"], valid=(8, 5))
    want = reference_forward(diffusers_model(variant["sd"], variant["cfg"], variant["kind"]), inputs)
    dit = load_dit(variant["path"], resident_blocks="all")
    try:
        assert dit.model.cfg.image_condition == {"latent_concat": "latent_concat", "skyreels": "concat"}.get(variant["name"])
        got = dit(**inputs, first_frame_tokens=first_tokens(inputs, variant))
    finally:
        dit.close()
    assert got.shape == want.shape == (2, 16, 3, 6, 8)
    assert want.abs().max() > 0.3
    assert (got - want).abs().max().item() <= 1e-5
    if variant["replace"]:  # the t = 0 modulation changes the output (the test sees the feature)
        plain = reference_forward(diffusers_model(variant["sd"], variant["cfg"]), inputs)
        assert (plain - want).abs().max() > 1e-3


@pytest.mark.parametrize("chunk", [5, 7, 1024])
def test_lean_equals_plain_with_boundaries_inside_chunks(variant, chunk):
    inputs = dit_inputs(1, variant["cfg"])
    dit = load_dit(variant["path"], resident_blocks="all")
    try:
        n0 = first_tokens(inputs, variant)
        dit.model.lean = False
        plain = dit(**inputs, first_frame_tokens=n0)
        dit.model.lean, dit.model.chunk_tokens = True, chunk
        lean = dit(**inputs, first_frame_tokens=n0)
    finally:
        dit.close()
    assert (lean - plain).abs().max().item() <= 5e-6  # rounding: chunked vs whole kernel calls (outputs ~2)


def test_streamed_equals_resident(variant):
    inputs = dit_inputs(1, variant["cfg"])
    outs = []
    for resident in ("all", None):
        dit = load_dit(variant["path"], resident_blocks=resident, prefetch_blocks=1)
        try:
            outs.append(dit(**inputs, first_frame_tokens=first_tokens(inputs, variant)))
        finally:
            dit.close()
    assert torch.equal(outs[0], outs[1])
