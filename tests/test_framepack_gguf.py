"""FramePack DiTs as GGUF files: the diffusers-named FramePack transformer (lllyasviel's / kijai's names) in
mixed quantisation types, its 5-D patch embeddings (the noisy latents' and the history's three) as they are or
reshaped with ComfyUI-GGUF's orig_shape metadata, with or without ComfyUI's prefix. One section's forward with
a packed history equals diffusers' HunyuanVideoFramepackTransformer3DModel holding the dequantised weights;
the blocks stream as their quantised bytes; streamed equals resident bit for bit."""

import re

import pytest
import torch

from hystream.errors import HyStreamError
from hystream.loading import load_dit
from hystream.quant.kinds import KINDS
from tiny_framepack import our_forward, reference_forward, reference_model, section_inputs
from tiny_gguf import BLOCK_TYPES, twin, write_gguf

PREFIX = "model.diffusion_model."
BLOCK = re.compile(r"(context_embedder\.token_refiner\.refiner_blocks|transformer_blocks|single_transformer_blocks)"
                   r"\.(\d+)\.")
FIVE_D = ("x_embedder.proj.weight", "clean_x_embedder.proj.weight", "clean_x_embedder.proj_2x.weight",
          "clean_x_embedder.proj_4x.weight")


def framepack_types(sd: dict) -> dict:
    """A city96-like mix for the diffusers-named FramePack DiT: 1-D tensors and the 5-D patch embeddings
    unquantised (F32; the history's in F16), the small embedders F16 / BF16, the SigLIP projection Q8_0 (a
    non-block tensor decoded on the host), each block's Linears in one quant type, the type changing from
    block to block (a fused q/k/v reads its parts in one type)."""
    blocks = sorted({m.group(0) for k in sd if (m := BLOCK.match(k))})
    out = {}
    for name, t in sd.items():
        m = BLOCK.match(name)
        if t.dim() == 1 or name == "x_embedder.proj.weight":
            qtype = "F32"
        elif name.startswith("clean_x_embedder."):
            qtype = "F16"
        elif name.startswith("image_projection."):
            qtype = "Q8_0"
        elif m is None:
            qtype = "F16" if "time_text_embed" in name else "BF16"
        else:
            qtype = BLOCK_TYPES[blocks.index(m.group(0)) % len(BLOCK_TYPES)]
        out[name] = (t, qtype)
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("framepack_gguf")
    model = reference_model()
    tensors = framepack_types({k: v.detach() for k, v in model.state_dict().items()})
    reference = reference_model()
    reference.load_state_dict(twin(tensors))  # what the GGUF decodes to
    out = {"reference": reference, "types": tensors}
    out["plain"] = write_gguf(str(root / "FramePackI2V_HY-Q4_K_M.gguf"), tensors)
    out["prefixed"] = write_gguf(str(root / "prefixed.gguf"), {PREFIX + k: v for k, v in tensors.items()}, arch="pig")
    # GGML tensors have at most 4 dims: ComfyUI-GGUF's converter stores the 5-D ones reshaped, with their shape
    # in the metadata
    reshaped = {k: ((t.flatten(3), q) if k in FIVE_D else (t, q)) for k, (t, q) in tensors.items()}
    out["orig_shape"] = write_gguf(str(root / "orig_shape.gguf"), reshaped,
                                   arrays={f"comfy.gguf.orig_shape.{k}": list(tensors[k][0].shape) for k in FIVE_D})
    return out


def forward(path, inputs, **kw):
    dit = load_dit(path, **kw)
    try:
        return our_forward(dit, inputs), dit
    finally:
        dit.close()


@pytest.mark.parametrize("variant", ["plain", "prefixed", "orig_shape"])
def test_gguf_section_matches_diffusers_with_the_dequantised_weights(files, variant):
    inputs = section_inputs(1)
    want = reference_forward(files["reference"], inputs)
    got, dit = forward(files[variant], inputs)
    assert dit.model.cfg.framepack and dit.model.cfg.image_proj_dim == 128
    assert dit.layout.startswith("diffusers"), dit.layout
    assert got.shape == want.shape == inputs["x"].shape
    assert want.abs().max() > 0.3
    assert (got - want).abs().max().item() <= 1e-5


def test_batch_of_two_and_an_odd_history(files):
    """Odd history lengths and sides the coarse kernels pad, two prompts of different lengths."""
    for inputs in (section_inputs(2, valid=(7, 4)), section_inputs(1, 2, 6, 10, history=(2, 3, 5), padding=0)):
        want = reference_forward(files["reference"], inputs)
        got, _ = forward(files["plain"], inputs, resident_blocks="all")
        assert (got - want).abs().max().item() <= 1e-5


def test_blocks_stay_quantised_and_framepack_parts_are_decoded(files):
    dit = load_dit(files["plain"])
    try:
        linears = [m for b in dit.model.blocks for m in b.modules() if getattr(m, "quant", None) is not None]
        used = {q for k, (_, q) in files["types"].items() if BLOCK.match(k) and q in KINDS}
        assert {m.quant.name for m in linears} == used and len(used) >= 5
        assert all(m.weight.dtype == torch.uint8 for m in linears)
        # the history embedders and the SigLIP projection are fixed parts: decoded numbers
        for p in (dit.model.image_projection.up.weight, dit.model.clean_x_embedder.proj_4x.weight):
            assert p.is_floating_point()
        assert dit.model.clean_x_embedder.proj_4x.weight.shape == files["types"][FIVE_D[3]][0].shape
        our_forward(dit, section_inputs(1))
        assert dit.stats.as_dict()["bytes_copied"] == sum(dit.streamer.block_bytes(i)
                                                          for i in range(dit.streamer.block_count()))
    finally:
        dit.close()


@pytest.mark.parametrize("prefetch", [1, 2])
def test_streamed_is_bit_identical_to_resident(files, prefetch):
    inputs = section_inputs(1)
    want, _ = forward(files["plain"], inputs, resident_blocks="all")
    for tier in ("pinned", "mapped"):
        got, dit = forward(files["plain"], inputs, prefetch_blocks=prefetch, host_tier=tier)
        assert torch.equal(got, want), tier
        assert dit.stats.copies == dit.streamer.block_count()


@pytest.mark.parametrize("drop", ["clean_x_embedder.", "image_projection."])
def test_a_gguf_with_half_of_framepack_is_refused(files, tmp_path, drop):
    tensors = {k: v for k, v in files["types"].items() if not k.startswith(drop)}
    path = write_gguf(str(tmp_path / "partial.gguf"), tensors)  # no "FramePack" in the name: the message says it
    with pytest.raises(HyStreamError) as err:
        load_dit(path)
    lack = "image_projection" if drop == "image_projection." else "clean_x_embedder"
    assert f"FramePack's {lack}" in str(err.value) and "incomplete" in str(err.value), str(err.value)
