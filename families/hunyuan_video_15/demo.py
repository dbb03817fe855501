"""Tiny random HunyuanVideo 1.5 models as ComfyUI's models/ folders hold them, for the demo, smoke runs and the
host tests: the DiT (Comfy-Org's fused layout, fp16; a T2V and an I2V file), Qwen2.5-VL (fp8_scaled) and ByT5
with tokenizers beside them, the VAE, SigLIP and a LoRA. The widths are tied: the DiT's text input is the
Qwen's hidden size, its glyph input ByT5's, its image input SigLIP's. The output is noise."""

from __future__ import annotations

import os

import torch

from .config import DiTConfig
from .demo_dit import COMFY_DIT, COMFY_I2V_DIT, write_comfy_dit
from .demo_text import BYT5_WIDTH, QWEN_HIDDEN, write_demo_text_models
from .demo_vae import write_vae
from .demo_vision import TINY_SIGLIP, write_demo_siglip

# diffusers hard-codes the glyph projection's width (2048); the rest is tiny (head dim 128 is the RoPE's)
TINY_DIT = DiTConfig(hidden=256, heads=2, depth=2, depth_refiner=1, mlp_hidden=1024, refiner_mlp_hidden=1024,
                     text_dim=QWEN_HIDDEN, glyph_dim=BYT5_WIDTH, glyph_hidden=2048,
                     image_dim=TINY_SIGLIP["hidden_size"])
LORA = "hunyuanvideo15_demo_lora.safetensors"


def write_comfy_lora(folder: str, cfg: DiTConfig = TINY_DIT, rank: int = 4, seed: int = 0) -> str:
    """A LoRA on every block's image attention projections, in Comfy's key format (diffusion_model.…)."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    sd = {}
    for n in range(cfg.depth):
        for target, rows in (("img_attn_qkv", 3 * cfg.hidden), ("img_attn_proj", cfg.hidden)):
            base = f"diffusion_model.double_blocks.{n}.{target}"
            sd[base + ".lora_down.weight"] = torch.randn(rank, cfg.hidden, generator=g) * 0.05
            sd[base + ".lora_up.weight"] = torch.randn(rows, rank, generator=g) * 0.05
            sd[base + ".alpha"] = torch.tensor(float(rank))
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, LORA)
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in sd.items()}, path)
    return path


def build_models(root: str) -> dict[str, str]:
    """All tiny 1.5 models under `root` (ComfyUI's models/ layout). Returns {"dit" | "i2v_dit" | "llm" | "clip" |
    "vae" | "vision" | "lora": path, "models": root}."""
    text = write_demo_text_models(os.path.join(root, "text_encoders"))
    dit_dir = os.path.join(root, "diffusion_models")
    return {
        "dit": write_comfy_dit(dit_dir, TINY_DIT, seed=0, name=COMFY_DIT),
        "i2v_dit": write_comfy_dit(dit_dir, TINY_DIT, seed=1, name=COMFY_I2V_DIT),
        "llm": text["llm"],
        "clip": text["second_text"],
        "vae": write_vae(os.path.join(root, "vae"), "comfy", residual_scale=0.5),
        "vision": write_demo_siglip(os.path.join(root, "clip_vision")),
        "lora": write_comfy_lora(os.path.join(root, "loras")),
        "models": root,
    }


def smoke_model(folder: str, width: int, height: int, seed: int):
    """The tiny DiT's file and one forward's inputs at a video size (the smoke run's streamed-vs-resident check)."""
    g = torch.Generator().manual_seed(seed)
    cfg, text = TINY_DIT, 24
    inputs = {"x": torch.randn(1, cfg.in_channels, 2, height // 16, width // 16, generator=g),
              "timestep": torch.tensor([900.0]), "txt": torch.randn(1, text, cfg.text_dim, generator=g),
              "txt_mask": (torch.arange(text) < 17).long()[None],
              "glyph": torch.randn(1, 5, cfg.glyph_dim, generator=g), "glyph_mask": torch.ones(1, 5, dtype=torch.long),
              "image": None}
    return write_comfy_dit(folder, cfg, seed=seed, name=COMFY_DIT), inputs
