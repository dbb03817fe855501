"""HunyuanVideo 1.5's DiT from the other files users have: a city96-layout GGUF (mixed quantisation types,
the 5-D patch embedding, "hyvid") computes what its dequantised twin computes and streams quantised; LoRAs in
the key formats 1.5 LoRAs ship in (diffusers/PEFT, Tencent's split q/k/v, Comfy's fused names) equal the
hand-merged model; a 1.0 file given where 1.5 is wanted (and the reverse) is refused naming both."""

import pytest
import torch
from safetensors.torch import save_file

from hystream.errors import HyStreamError
from hystream.loaders.lora import attach_loras, load_lora
from hystream.loading import load_dit
from tiny_dit15 import TINY15, diffusers_model, dit_inputs, fused, reference_forward, save_layout, tencent_state_dict
from tiny_gguf import dit_types, twin, write_gguf


@pytest.fixture(scope="module")
def sd():
    return tencent_state_dict(seed=5)


def run(path, inputs, loras=(), **kw):
    dit = load_dit(path, **kw)
    try:
        with torch.no_grad(), attach_loras(dit.model, [(load_lora(p, dit.model), s) for p, s in loras]):
            return dit(**inputs), dit
    finally:
        dit.close()


def test_gguf_equals_its_dequantised_twin_and_streams_quantised(tmp_path, sd):
    tensors = dit_types(fused(sd))
    twin_path = str(tmp_path / "twin.safetensors")
    save_file(twin(tensors), twin_path)
    path = write_gguf(str(tmp_path / "hunyuanvideo1.5_480p_t2v-Q4_K_M.gguf"), tensors)
    inputs = dit_inputs(image=True)
    want, _ = run(twin_path, inputs, resident_blocks="all")
    got, dit = run(path, inputs)
    assert dit.family.name == "hunyuan_video_15" and dit.layout.startswith("Comfy-Org")
    assert (got - want).abs().max().item() <= 1e-5 * max(1.0, want.abs().max().item())
    quantised = [m for b in dit.model.blocks for m in b.modules() if getattr(m, "quant", None) is not None]
    assert quantised and all(m.weight.dtype == torch.uint8 for m in quantised)


# -- LoRA --------------------------------------------------------------------------------------------------
def lora_parts(seed=0, rank=4):
    """A LoRA on the image q, k and v of block 0 and on the text projection of block 1 (Tencent names)."""
    g = torch.Generator().manual_seed(seed)
    h = TINY15.hidden
    targets = ["double_blocks.0.img_attn_q", "double_blocks.0.img_attn_k", "double_blocks.0.img_attn_v",
               "double_blocks.1.txt_attn_proj", "double_blocks.1.img_mlp.fc1"]
    outs = {"double_blocks.1.img_mlp.fc1": TINY15.mlp_hidden}
    return {t: (torch.randn(rank, h, generator=g) * 0.2, torch.randn(outs.get(t, h), rank, generator=g) * 0.2)
            for t in targets}


def merged(sd, parts, strength=1.0):
    out = dict(sd)
    for t, (down, up) in parts.items():
        out[t + ".weight"] = sd[t + ".weight"] + strength * (up @ down)
    return out


DIFFUSERS = {"double_blocks.0.img_attn_q": "transformer_blocks.0.attn.to_q",
             "double_blocks.0.img_attn_k": "transformer_blocks.0.attn.to_k",
             "double_blocks.0.img_attn_v": "transformer_blocks.0.attn.to_v",
             "double_blocks.1.txt_attn_proj": "transformer_blocks.1.attn.to_add_out",
             "double_blocks.1.img_mlp.fc1": "transformer_blocks.1.ff.net.0.proj"}


def write_lora(parts, fmt, path):
    out = {}
    for t, (down, up) in parts.items():
        if fmt == "diffusers":
            name = "transformer." + DIFFUSERS[t]
            out[name + ".lora_A.weight"], out[name + ".lora_B.weight"] = down, up
        elif fmt == "comfy":  # ComfyUI's own LoRA names: diffusion_model. + the model's module names
            name = "diffusion_model." + t
            out[name + ".lora_down.weight"], out[name + ".lora_up.weight"] = down, up
            out[name + ".alpha"] = torch.tensor(float(down.shape[0]))
        elif fmt == "musubi":  # kohya-style names over Tencent's split q/k/v
            name = "lora_unet_" + t.replace(".", "_")
            out[name + ".lora_down.weight"], out[name + ".lora_up.weight"] = down, up
            out[name + ".alpha"] = torch.tensor(float(down.shape[0]))
    save_file(out, str(path))
    return str(path)


@pytest.mark.parametrize("fmt", ["diffusers", "musubi", "comfy"])
def test_loras_equal_the_merged_model(tmp_path, sd, fmt):
    base = save_layout(sd, "comfy_prefixed", str(tmp_path / "base"))
    parts = lora_parts()
    path = write_lora(parts, fmt, tmp_path / f"lora_{fmt}.safetensors")
    inputs = dit_inputs(image=True)
    got, _ = run(base, inputs, loras=[(path, 0.7)])
    want = reference_forward(diffusers_model(merged(sd, parts, 0.7)), inputs)
    plain = reference_forward(diffusers_model(sd), inputs)
    assert (got - want).abs().max().item() <= 1e-5 * max(1.0, want.abs().max().item())
    assert (got - plain).abs().max().item() > 1e-3  # it did something


# -- the wrong family ---------------------------------------------------------------------------------------
def test_a_1_0_dit_is_not_a_1_5_one_and_back(tmp_path, sd, tiny_dit_sd):
    from tiny_dit import save_layout as save_10

    path_15 = save_layout(sd, "comfy", str(tmp_path / "v15"))
    dit = load_dit(path_15)
    try:
        assert dit.family.name == "hunyuan_video_15"
        with pytest.raises(HyStreamError) as info:  # 1.0 inputs (LLaVA states + CLIP pooled) on a 1.5 DiT
            dit(**dict(dit_inputs(), txt=torch.randn(1, 12, 4096)))
        assert "HunyuanVideo 1.5" in str(info.value)
    finally:
        dit.close()
    dit = load_dit(save_10(tiny_dit_sd, "comfy", str(tmp_path / "v10"))[0])
    try:
        assert dit.family.name == "hunyuan_video"
    finally:
        dit.close()
