"""Bad DiT files get a HyStreamError that says what was expected, what was found and what to do."""

import os
import shutil

import pytest
import torch
from safetensors.torch import save_file

from hystream.errors import (
    CorruptFileError,
    HyStreamError,
    NotFoundError,
    StateDictError,
    UnsupportedLayoutError,
    UnsupportedVariantError,
    WrongModelError,
)
from hystream.loading import load_dit
from tiny_dit import save_layout


def small(*shape):
    return torch.zeros(*shape)


def write(tmp_path, name, sd):
    path = tmp_path / name
    save_file(sd, str(path))
    return str(path)


def expect(exc_type, path, *fragments):
    with pytest.raises(exc_type) as info:
        load_dit(path)
    msg = str(info.value)
    for fragment in fragments:
        assert fragment in msg, msg
    assert "expected" in msg and "found" in msg and "What to do" in msg, msg
    return msg


def test_vae_given_as_dit(tmp_path):
    path = write(tmp_path, "hunyuan_video_vae_bf16.safetensors", {
        "decoder.up_blocks.0.resnets.0.conv1.conv.weight": small(4, 4, 3, 3, 3),
        "decoder.conv_in.conv.weight": small(4, 16, 3, 3, 3)})
    expect(WrongModelError, path, "VAE", "hunyuan_video_vae_bf16.safetensors")


def test_comfy_vae_given_as_dit(tmp_path):
    path = write(tmp_path, "vae.safetensors", {"decoder.up.0.block.0.conv1.conv.weight": small(4, 4, 3, 3, 3)})
    expect(WrongModelError, path, "VAE")


def test_llama_given_as_dit(tmp_path):
    path = write(tmp_path, "llava_llama3_fp16.safetensors", {
        "model.embed_tokens.weight": small(10, 8), "model.layers.0.self_attn.q_proj.weight": small(8, 8)})
    expect(WrongModelError, path, "Llama")


def test_clip_given_as_dit(tmp_path):
    path = write(tmp_path, "clip_l.safetensors", {"text_model.encoder.layers.0.mlp.fc1.weight": small(8, 4)})
    expect(WrongModelError, path, "CLIP")


def test_lora_given_as_dit(tmp_path):
    path = write(tmp_path, "lora.safetensors", {"diffusion_model.double_blocks.0.img_attn_qkv.lora_up.weight": small(8, 2)})
    expect(WrongModelError, path, "LoRA")


def test_flux_given_as_dit(tmp_path):
    path = write(tmp_path, "flux1-dev.safetensors", {"double_blocks.0.img_attn.qkv.weight": small(12, 4),
                                                     "img_in.weight": small(4, 64)})
    expect(WrongModelError, path, "Flux")


def test_truncated_file(tmp_path, tiny_dit_sd):
    path, _ = save_layout(tiny_dit_sd, "tencent", str(tmp_path))
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    expect(CorruptFileError, path, "past the end of the file", f"{size // 2:,} bytes", "download")


def test_garbage_header(tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}" + b"\x00" * 64)
    expect(CorruptFileError, str(path), "not valid JSON")


def test_header_length_beyond_file(tmp_path):
    path = tmp_path / "html_error_page.safetensors"
    path.write_bytes(b"<!DOCTYPE html><html>Rate limit</html>")
    expect(CorruptFileError, str(path), "header length")


def test_missing_keys(tmp_path, tiny_dit_sd):
    sd = {k: v for k, v in tiny_dit_sd.items() if not k.startswith("single_blocks.1.linear2")}
    msg = expect(StateDictError, write(tmp_path, "dit.safetensors", sd), "missing", "single_blocks.1.linear2.weight")
    assert "2 missing" in msg


def test_unexpected_keys(tmp_path, tiny_dit_sd):
    sd = dict(tiny_dit_sd, **{"double_blocks.0.img_attn_extra.weight": small(4, 4)})
    expect(StateDictError, write(tmp_path, "dit.safetensors", sd), "unexpected", "double_blocks.0.img_attn_extra.weight")


def test_contradicting_shapes(tmp_path, tiny_dit_sd):
    sd = dict(tiny_dit_sd)
    sd["double_blocks.1.img_attn_proj.weight"] = small(256, 128)
    expect(StateDictError, write(tmp_path, "dit.safetensors", sd), "double_blocks.1.img_attn_proj.weight",
           "file [256, 128]", "model [256, 256]")


@pytest.mark.parametrize("channels", [20, 48, 65])
def test_input_channels_of_no_hunyuan_video_variant(tmp_path, tiny_dit_sd, channels):
    """16 (T2V, I2V token replace), 32 (SkyReels) and 33 (I2V latent concat) load; others are named."""
    sd = dict(tiny_dit_sd)
    sd["img_in.proj.weight"] = small(256, channels, 1, 2, 2)
    expect(UnsupportedVariantError, write(tmp_path, "hunyuan_video_image_to_video.safetensors", sd), f"{channels} input",
           "33 (HunyuanVideo-I2V latent concat)")


def test_hunyuan_video_15(tmp_path, tiny_dit_sd):
    sd = dict(tiny_dit_sd, **{"byt5_in.fc1.weight": small(8, 8)})
    expect(UnsupportedVariantError, write(tmp_path, "hunyuanvideo1.5.safetensors", sd), "HunyuanVideo 1.5")


def test_unknown_hunyuan_like_layout(tmp_path, tiny_dit_sd):
    sd = {k: v for k, v in tiny_dit_sd.items() if not k.startswith("img_in.")}
    msg = expect(UnsupportedLayoutError, write(tmp_path, "odd.safetensors", sd), "diffusers", "Comfy-Org", "Tencent")
    assert "layouts HyStream reads" in msg


def test_a_gguf_cut_after_its_magic(tmp_path):
    path = tmp_path / "hunyuan-video-t2v-720p-Q4_K_M.gguf"
    path.write_bytes(b"GGUF")
    expect(CorruptFileError, str(path), "GGUF", "hunyuan-video-t2v-720p-Q4_K_M.gguf")


def test_missing_file(tmp_path):
    expect(NotFoundError, str(tmp_path / "nope.safetensors"), "nope.safetensors")


def test_missing_shard(tmp_path, tiny_dit_sd):
    root, _ = save_layout(tiny_dit_sd, "diffusers", str(tmp_path / "d"))
    shard = max(p for p in os.listdir(os.path.join(root, "transformer")) if p.endswith(".safetensors"))
    os.remove(os.path.join(root, "transformer", shard))
    expect(NotFoundError, root, shard)


def test_errors_are_one_family():
    for cls in (CorruptFileError, WrongModelError, StateDictError, UnsupportedLayoutError,
                UnsupportedVariantError, NotFoundError):
        assert issubclass(cls, HyStreamError)


def test_bad_weight_dtype(tmp_path, tiny_dit_sd):
    path, _ = save_layout(tiny_dit_sd, "tencent", str(tmp_path))
    with pytest.raises(HyStreamError, match="weight_dtype one of auto, bf16, fp16, fp8_e4m3fn"):
        load_dit(path, weight_dtype="int4")


def test_folder_without_weights(tmp_path):
    (tmp_path / "empty").mkdir()
    expect(NotFoundError, str(tmp_path / "empty"), "none in")
    shutil.rmtree(tmp_path / "empty")
