"""The FramePack DiT (families/hunyuan_video/framepack_dit.py) against diffusers' HunyuanVideoFramepackTransformer3DModel
with the same weights, from each file layout users have: the packed history (clean, 2x, 4x with padding), the
SigLIP image tokens before the text, RoPE at the section's frame indices; lean equals plain; streamed equals
resident bit for bit; a partial file and a call without the history are refused clearly."""

import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from hystream.errors import HyStreamError
from hystream.loading import load_dit
from tiny_framepack import our_forward, reference_forward, reference_model, save_layout, section_inputs

LAYOUTS = ["lllyasviel", "kijai_bf16", "kijai_fp8"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    model = reference_model()
    folder = str(tmp_path_factory.mktemp("framepack"))
    return {layout: save_layout(model, layout, os.path.join(folder, layout)) for layout in LAYOUTS}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("batch", [1, 2])
def test_matches_diffusers(files, layout, batch):
    path, reference = files[layout]
    inputs = section_inputs(batch, valid=(7, 4)[:batch])
    want = reference_forward(reference, inputs)
    dit = load_dit(path, resident_blocks="all")
    try:
        assert dit.model.cfg.framepack and dit.model.cfg.image_proj_dim == 128
        got = our_forward(dit, inputs)
    finally:
        dit.close()
    assert got.shape == want.shape == inputs["x"].shape
    assert want.abs().max() > 0.3
    assert (got - want).abs().max().item() <= 1e-5


@pytest.mark.parametrize("history, frames, size", [((1, 2, 16), 3, (8, 12)), ((2, 3, 5), 2, (6, 10)), ((1, 2, 16), 9, (16, 16))])
def test_every_history_shape_and_the_padding_of_the_coarse_kernels(files, history, frames, size):
    """Odd history lengths and sides the 2x / 4x kernels do not divide: replicate padding, pooled RoPE."""
    path, reference = files["kijai_bf16"]
    inputs = section_inputs(1, frames, *size, history=history, padding=0)
    want = reference_forward(reference, inputs)
    dit = load_dit(path, resident_blocks="all")
    try:
        got = our_forward(dit, inputs)
    finally:
        dit.close()
    assert (got - want).abs().max().item() <= 1e-5


@pytest.mark.parametrize("chunk", [5, 37, 4096])
def test_lean_equals_plain(files, chunk):
    inputs = section_inputs(1)
    dit = load_dit(files["kijai_bf16"][0], resident_blocks="all")
    try:
        dit.model.lean = False
        plain = our_forward(dit, inputs)
        dit.model.lean, dit.model.chunk_tokens = True, chunk
        lean = our_forward(dit, inputs)
    finally:
        dit.close()
    assert (lean - plain).abs().max().item() <= 1e-6 * plain.abs().max().item()  # outputs reach ~7 here


@pytest.mark.parametrize("layout", ["lllyasviel", "kijai_fp8"])
def test_streamed_equals_resident(files, layout):
    inputs = section_inputs(1)
    outs = []
    for resident in ("all", None):
        dit = load_dit(files[layout][0], resident_blocks=resident, prefetch_blocks=1)
        try:
            outs.append(our_forward(dit, inputs))
            assert dit.stats.copies == (0 if resident else dit.streamer.stats.blocks_streamed)
        finally:
            dit.close()
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("drop", ["clean_x_embedder.", "image_projection."])
def test_a_file_with_half_of_framepack_is_refused(files, tmp_path, drop):
    sd = load_file(files["kijai_bf16"][0])
    path = str(tmp_path / "FramePack_partial.safetensors")
    save_file({k: v for k, v in sd.items() if not k.startswith(drop)}, path)
    with pytest.raises(HyStreamError) as err:
        load_dit(path)
    assert "FramePack" in str(err.value) and "incomplete" in str(err.value)


def test_a_call_without_the_history_is_refused(files):
    inputs = section_inputs(1)
    dit = load_dit(files["kijai_bf16"][0], resident_blocks="all")
    try:
        with pytest.raises(HyStreamError, match="FramePack sampler"):
            dit(inputs["x"], inputs["timestep"], inputs["txt"], inputs["txt_mask"], inputs["pooled"], inputs["guidance"])
        with pytest.raises(HyStreamError, match="SigLIP states"):
            our_forward(dit, dict(inputs, image_embeds=torch.zeros(1, 5, 129)))
    finally:
        dit.close()
