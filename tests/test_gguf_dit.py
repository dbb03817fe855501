"""HunyuanVideo DiT GGUF files (city96's layout: mixed quantisation types, F32 1-D tensors, the 5-D patch
embedding, with or without ComfyUI's prefix) compute what their dequantised twin computes; blocks cross
the wire as their quantised bytes and are decoded on the compute device; streamed equals resident; LoRA,
bf16 re-storage, the planner and the simulated CUDA path work on them; broken or foreign files are refused
with errors that say what to do."""

import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from hystream.errors import CorruptFileError, UnsupportedLayoutError, UnsupportedVariantError, WrongModelError
from hystream.loaders.lora import attach_loras, load_lora
from hystream.loading import load_dit
from hystream.offload.backend import CudaBackend
from hystream.quant.kinds import KINDS
from stream_check import SimCuda
from test_lora import random_lora, write
from tiny_dit import dit_inputs
from tiny_gguf import dit_types, twin, write_gguf

PREFIX = "model.diffusion_model."


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_dit_sd):
    root = tmp_path_factory.mktemp("gguf_dit")
    tensors = dit_types(tiny_dit_sd)
    out = {"twin": str(root / "twin_fp32.safetensors"), "types": tensors}
    save_file(twin(tensors), out["twin"])
    out["plain"] = write_gguf(str(root / "hunyuan-video-t2v-720p-Q4_K_M.gguf"), tensors)
    out["prefixed"] = write_gguf(str(root / "prefixed.gguf"), dit_types(tiny_dit_sd, PREFIX), arch="pig")
    # the patch embedding reshaped to 4 dims with its original shape in the metadata, as the converter does
    # before the 5-D fix
    w = tiny_dit_sd["img_in.proj.weight"]
    reshaped = dict(tensors, **{"img_in.proj.weight": (w.reshape(w.shape[0], w.shape[1], 2, 2), "F32")})
    out["orig_shape"] = write_gguf(str(root / "orig_shape.gguf"), reshaped,
                                   arrays={"comfy.gguf.orig_shape.img_in.proj.weight": list(w.shape)})
    out["no_orig_shape"] = write_gguf(str(root / "no_orig_shape.gguf"), reshaped)
    return out


def run(path, inputs, loras=(), **kw):
    dit = load_dit(path, **kw)
    try:
        with attach_loras(dit.model, [(load_lora(p, dit.model), s) for p, s in loras]):
            return dit(**inputs), dit
    finally:
        dit.close()


@pytest.mark.parametrize("variant", ["plain", "prefixed", "orig_shape"])
def test_gguf_computes_what_its_dequantised_twin_computes(files, variant):
    inputs = dit_inputs(2, valid=(8, 5))
    want, _ = run(files["twin"], inputs, resident_blocks="all")
    got, dit = run(files[variant], inputs)
    assert want.abs().max() > 0.5
    assert (got - want).abs().max().item() <= 1e-5
    assert dit.layout.startswith("Tencent") or dit.layout.startswith("Comfy"), dit.layout


def test_blocks_stay_quantised_and_cross_the_wire_as_bytes(files):
    inputs = dit_inputs()
    gguf = load_dit(files["plain"])
    dense = load_dit(files["twin"], weight_dtype="bf16")
    try:
        used = {qtype for _, qtype in files["types"].values() if qtype in KINDS}
        assert used == set(KINDS)  # every quantisation type is exercised by the file
        linears = [m for b in gguf.model.blocks for m in b.modules() if getattr(m, "quant", None) is not None]
        assert {m.quant.name for m in linears} == set(KINDS)
        assert all(m.weight.dtype == torch.uint8 for m in linears)
        gguf_bytes = sum(gguf.streamer.block_bytes(i) for i in range(gguf.streamer.block_count()))
        bf16_bytes = sum(dense.streamer.block_bytes(i) for i in range(dense.streamer.block_count()))
        assert gguf_bytes < 0.45 * bf16_bytes  # ~4.6 bits a weight on average in this mix, vs 16
        with torch.no_grad():
            gguf(**inputs)
        stats = gguf.stats.as_dict()
        assert stats["bytes_copied"] == gguf_bytes  # what crossed: the quantised bytes, once each
    finally:
        gguf.close()
        dense.close()


@pytest.mark.parametrize("prefetch", [1, 2])
def test_streamed_is_bit_identical_to_resident(files, prefetch):
    inputs = dit_inputs()
    want, _ = run(files["plain"], inputs, resident_blocks="all")
    for tier in ("pinned", "mapped"):
        got, dit = run(files["plain"], inputs, prefetch_blocks=prefetch, host_tier=tier)
        assert torch.equal(got, want), tier
        assert dit.stats.copies == dit.streamer.block_count()  # every unit (double blocks as parts) once


def test_simulated_cuda_path_is_ordered_and_exact(files):
    """The whole GGUF DiT through the CUDA code path against the vector-clock checker: the uint8 slots
    are written on the copy stream and decoded on the compute stream only after the copy's event."""
    inputs = dit_inputs()
    want, _ = run(files["plain"], inputs, resident_blocks="all")
    for tier in ("pinned", "mapped"):
        sim = SimCuda()
        dit = load_dit(files["plain"], prefetch_blocks=2, host_tier=tier, backend=CudaBackend("cpu", cuda=sim))
        try:
            with sim.compute_reads():
                got = dit(**inputs)
        finally:
            dit.close()
        assert torch.equal(got, want), tier
        sim.check()


def test_weight_dtype_bf16_decodes_the_blocks_once_on_the_host(files):
    inputs = dit_inputs()
    want, _ = run(files["twin"], inputs, weight_dtype="bf16")
    got, dit = run(files["plain"], inputs, weight_dtype="bf16")
    assert torch.equal(got, want)
    assert not any(getattr(m, "quant", None) for b in dit.model.blocks for m in b.modules())


def test_lora_on_a_gguf_equals_lora_on_its_twin(files, tmp_path):
    path = write(random_lora(3), "comfy", tmp_path / "lora.safetensors")
    inputs = dit_inputs()
    want, _ = run(files["twin"], inputs, loras=[(path, 0.8)])
    got, _ = run(files["plain"], inputs, loras=[(path, 0.8)])
    base, _ = run(files["plain"], inputs)
    assert (got - want).abs().max().item() <= 1e-5
    assert (got - base).abs().max().item() > 1e-3  # the LoRA did something


def test_memory_estimate_counts_the_decoded_pieces(files):
    """The activation estimate of a GGUF DiT counts the decoding (more than the bf16 file's), and the lean
    blocks decode a piece of a matrix at a time (models/lean.py: rows of the fused projections, column
    pieces of the output projections): never a whole Linear, its temporaries a GPU slab's few copies."""
    from hystream.families.hunyuan_video.config import DiTConfig
    from hystream.families.hunyuan_video.memory import forward_peak_bytes
    from hystream.models.lean import MLP_PIECE

    cfg = DiTConfig()
    shape = (1, 16, 9, 60, 104)
    plain = forward_peak_bytes(cfg, shape, 256, torch.bfloat16, True, None, "cuda", "flash", None)
    piece = max(cfg.hidden, MLP_PIECE) * cfg.hidden * 2  # the largest piece, decoded to bf16
    for kind in ("Q8_0", "Q4_K", "Q6_K", "Q2_K"):
        quant = forward_peak_bytes(cfg, shape, 256, torch.bfloat16, True, None, "cuda", "flash", kind)
        assert 2 ** 20 <= quant - plain <= 2 * piece + 32 * 2 ** 20, (kind, quant - plain)
    dit = load_dit(files["plain"])
    try:
        assert dit.model.block_weight_dtype in KINDS
        assert dit.model.activation_bytes((1, 16, 3, 6, 8), 12) > 0
    finally:
        dit.close()


# -- bad files ------------------------------------------------------------------------------------

def _copy_cut(src, dst, keep):
    with open(src, "rb") as f:
        data = f.read()
    with open(dst, "wb") as f:
        f.write(data[:keep(len(data))])
    return dst


@pytest.mark.parametrize("cut", [0, 10, 200, 0.5, 0.98], ids=["empty", "magic", "header", "half", "tail"])
def test_truncated_file_is_a_clear_error(files, tmp_path, cut):
    path = _copy_cut(files["plain"], str(tmp_path / "cut.gguf"), lambda n: int(cut * n) if cut < 1 else cut)
    with pytest.raises(CorruptFileError) as info:
        load_dit(path)
    msg = str(info.value)
    assert "download" in msg and "GGUF" in msg, msg


def test_garbage_with_a_gguf_name_is_a_clear_error(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(CorruptFileError, match="GGUF"):
        load_dit(str(path))
    bad_version = tmp_path / "v99.gguf"
    bad_version.write_bytes(b"GGUF" + (99).to_bytes(4, "little") + bytes(64))
    with pytest.raises(CorruptFileError, match="GGUF"):
        load_dit(str(bad_version))


def test_unsupported_quantisation_type_is_named(files, tiny_dit_sd, tmp_path):
    tensors = dit_types(tiny_dit_sd)
    name = "double_blocks.0.img_mlp.fc1.weight"
    rows, cols = tensors.pop(name)[0].shape
    raw = {name: (np.zeros((rows, cols // 32 * 18), dtype=np.uint8), 20, (rows, cols))}  # IQ4_NL
    path = write_gguf(str(tmp_path / "iq4.gguf"), tensors, raw=raw)
    with pytest.raises(UnsupportedLayoutError) as info:
        load_dit(path)
    msg = str(info.value)
    assert "IQ4_NL" in msg and name in msg and "Q4_K_M" in msg, msg


def test_patch_embedding_without_its_shape_is_named(files):
    with pytest.raises(CorruptFileError) as info:
        load_dit(files["no_orig_shape"])
    assert "orig_shape" in str(info.value) and "5-D" in str(info.value)


def test_flux_gguf_is_another_model(tmp_path):
    g = torch.Generator().manual_seed(0)
    flux = {"img_in.weight": (torch.randn(256, 64, generator=g), "Q8_0"),
            "double_blocks.0.img_attn.qkv.weight": (torch.randn(768, 256, generator=g), "Q4_K"),
            "double_blocks.0.img_attn.norm.query_norm.scale": (torch.ones(128), "F32"),
            "single_blocks.0.linear1.weight": (torch.randn(1792, 256, generator=g), "Q4_K"),
            "time_in.in_layer.weight": (torch.randn(256, 256, generator=g), "F16"),
            "guidance_in.in_layer.weight": (torch.randn(256, 256, generator=g), "F16")}
    path = write_gguf(str(tmp_path / "flux1-dev-Q4_K_S.gguf"), flux, arch="flux")
    with pytest.raises(WrongModelError) as info:
        load_dit(path)
    assert "Flux" in str(info.value) and "HunyuanVideo" in str(info.value)


def test_i2v_channel_counts_in_a_gguf(tiny_dit_sd, tmp_path):
    """An I2V GGUF (33 input channels) loads as the latent-concat variant; a count of no variant is named."""
    sd = dict(tiny_dit_sd)
    w = sd["img_in.proj.weight"]
    sd["img_in.proj.weight"] = torch.cat([w, w, w[:, :1]], dim=1)
    dit = load_dit(write_gguf(str(tmp_path / "i2v.gguf"), dit_types(sd)))
    assert dit.model.cfg.image_condition == "latent_concat"
    dit.close()
    sd["img_in.proj.weight"] = torch.cat([w, w[:, :4]], dim=1)
    with pytest.raises(UnsupportedVariantError) as info:
        load_dit(write_gguf(str(tmp_path / "odd.gguf"), dit_types(sd)))
    assert "20 input" in str(info.value)


def test_text_encoder_gguf_given_as_dit(tmp_path):
    g = torch.Generator().manual_seed(0)
    llm = {"token_embd.weight": (torch.randn(300, 256, generator=g), "Q8_0"),
           "blk.0.attn_q.weight": (torch.randn(256, 256, generator=g), "Q4_K"),
           "blk.0.attn_norm.weight": (torch.ones(256), "F32")}
    path = write_gguf(str(tmp_path / "llava-llama-3-8b-Q4_K_M.gguf"), llm, arch="llama")
    with pytest.raises(WrongModelError) as info:
        load_dit(path)
    assert "HunyuanVideo transformer" in str(info.value)


def test_hunyuan_video_1_5_gguf_says_what_it_is(tiny_dit_sd, tmp_path):
    """HunyuanVideo 1.5 GGUFs also say "hyvid": told apart by their tensors (ByT5 glyph input, cond-type
    embedding)."""
    g = torch.Generator().manual_seed(0)
    sd = dict(tiny_dit_sd, **{"byt5_in.fc1.weight": torch.randn(64, 32, generator=g),
                              "cond_type_embedding.weight": torch.randn(3, 64, generator=g)})
    path = write_gguf(str(tmp_path / "hunyuanvideo1.5_720p_t2v-Q4_K_M.gguf"), dit_types(sd))
    with pytest.raises(UnsupportedVariantError) as info:
        load_dit(path)
    assert "HunyuanVideo 1.5" in str(info.value)


def test_wan_gguf_is_another_model(tmp_path):
    g = torch.Generator().manual_seed(0)
    wan = {"patch_embedding.weight": (torch.randn(64, 16, 1, 2, 2, generator=g), "F32"),
           "blocks.0.self_attn.q.weight": (torch.randn(64, 64, generator=g), "Q8_0"),
           "blocks.0.self_attn.q.bias": (torch.randn(64, generator=g), "F32")}
    path = write_gguf(str(tmp_path / "wan2.1-t2v-14b-Q4_K_M.gguf"), wan, arch="wan")
    with pytest.raises(WrongModelError) as info:
        load_dit(path)
    assert "Wan" in str(info.value)
