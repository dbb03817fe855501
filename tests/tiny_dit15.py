"""Tiny random HunyuanVideo 1.5 DiTs saved in every real checkpoint layout, plus the diffusers reference.

Tencent's original names (q/k/v apart) are the ground truth. The diffusers names are made by a converter
written here from diffusers' own conversion script (scripts/convert_hunyuan_video1_5_to_diffusers.py in the
diffusers repository: q/k/v one to one, the refiner's fused qkv chunked in three, the final norm's halves
swapped), and must load strictly into diffusers' `HunyuanVideo15Transformer3DModel`: the names and shapes
are checked by diffusers, not by us.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

import torch
from safetensors.torch import save_file

from hystream.families.hunyuan_video_15 import demo_dit
from hystream.families.hunyuan_video_15.config import DiTConfig
from hystream.families.hunyuan_video_15.demo_dit import fused

# diffusers hard-codes the glyph projection's width (2048); the rest is tiny (head dim 128 is the RoPE's)
TINY15 = DiTConfig(in_channels=65, out_channels=32, hidden=256, heads=2, depth=2, depth_refiner=2, mlp_hidden=1024,
                   refiner_mlp_hidden=1024, text_dim=32, glyph_dim=24, glyph_hidden=2048, image_dim=48)


def tencent_state_dict(cfg: DiTConfig = TINY15, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights with Tencent's names (q/k/v apart): the demo's generator at the test's size."""
    return demo_dit.tencent_state_dict(cfg, seed)


def to_diffusers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Tencent names → diffusers names, after diffusers' conversion script."""
    simple = {"time_in.mlp.0": "time_embed.timestep_embedder.linear_1",
              "time_in.mlp.2": "time_embed.timestep_embedder.linear_2",
              "time_r_in.mlp.0": "time_embed.timestep_embedder_r.linear_1",
              "time_r_in.mlp.2": "time_embed.timestep_embedder_r.linear_2",
              "txt_in.t_embedder.mlp.0": "context_embedder.time_text_embed.timestep_embedder.linear_1",
              "txt_in.t_embedder.mlp.2": "context_embedder.time_text_embed.timestep_embedder.linear_2",
              "txt_in.c_embedder.linear_1": "context_embedder.time_text_embed.text_embedder.linear_1",
              "txt_in.c_embedder.linear_2": "context_embedder.time_text_embed.text_embedder.linear_2",
              "txt_in.input_embedder": "context_embedder.proj_in",
              "byt5_in.layernorm": "context_embedder_2.norm", "byt5_in.fc1": "context_embedder_2.linear_1",
              "byt5_in.fc2": "context_embedder_2.linear_2", "byt5_in.fc3": "context_embedder_2.linear_3",
              "vision_in.proj.0": "image_embedder.norm_in", "vision_in.proj.1": "image_embedder.linear_1",
              "vision_in.proj.3": "image_embedder.linear_2", "vision_in.proj.4": "image_embedder.norm_out",
              "img_in.proj": "x_embedder.proj", "cond_type_embedding": "cond_type_embed",
              "final_layer.linear": "proj_out"}
    refiner = {"norm1": "norm1", "norm2": "norm2", "self_attn_proj": "attn.to_out.0", "mlp.fc1": "ff.net.0.proj",
               "mlp.fc2": "ff.net.2", "adaLN_modulation.1": "norm_out.linear"}
    block = {"img_mod.linear": "norm1.linear", "txt_mod.linear": "norm1_context.linear", "img_attn_q": "attn.to_q",
             "img_attn_k": "attn.to_k", "img_attn_v": "attn.to_v", "img_attn_q_norm": "attn.norm_q",
             "img_attn_k_norm": "attn.norm_k", "img_attn_proj": "attn.to_out.0", "txt_attn_q": "attn.add_q_proj",
             "txt_attn_k": "attn.add_k_proj", "txt_attn_v": "attn.add_v_proj", "txt_attn_q_norm": "attn.norm_added_q",
             "txt_attn_k_norm": "attn.norm_added_k", "txt_attn_proj": "attn.to_add_out", "img_mlp.fc1": "ff.net.0.proj",
             "img_mlp.fc2": "ff.net.2", "txt_mlp.fc1": "ff_context.net.0.proj", "txt_mlp.fc2": "ff_context.net.2"}
    out = {}
    for key, t in sd.items():
        stem, _, kind = key.rpartition(".")
        if stem == "final_layer.adaLN_modulation.1":
            shift, scale = t.chunk(2, dim=0)
            out[f"norm_out.linear.{kind}"] = torch.cat([scale, shift])
        elif stem in simple:
            out[f"{simple[stem]}.{kind}"] = t
        elif (m := re.match(r"txt_in\.individual_token_refiner\.blocks\.(\d+)\.(.+)$", stem)):
            prefix = f"context_embedder.token_refiner.refiner_blocks.{m.group(1)}."
            if m.group(2) == "self_attn_qkv":
                for part, chunk in zip(("to_q", "to_k", "to_v"), t.chunk(3, dim=0)):
                    out[f"{prefix}attn.{part}.{kind}"] = chunk.contiguous()
            else:
                out[f"{prefix}{refiner[m.group(2)]}.{kind}"] = t
        elif (m := re.match(r"double_blocks\.(\d+)\.(.+)$", stem)):
            out[f"transformer_blocks.{m.group(1)}.{block[m.group(2)]}.{kind}"] = t
        else:
            raise KeyError(key)
    return out


def diffusers_model(tencent_sd: dict[str, torch.Tensor], cfg: DiTConfig = TINY15):
    """diffusers' transformer holding exactly these weights (fp32), loaded strictly."""
    from diffusers import HunyuanVideo15Transformer3DModel

    model = HunyuanVideo15Transformer3DModel(
        in_channels=cfg.in_channels, out_channels=cfg.out_channels, num_attention_heads=cfg.heads,
        attention_head_dim=cfg.head_dim, num_layers=cfg.depth, num_refiner_layers=cfg.depth_refiner,
        mlp_ratio=cfg.mlp_hidden / cfg.hidden, patch_size=cfg.patch[1], patch_size_t=cfg.patch[0],
        text_embed_dim=cfg.text_dim, text_embed_2_dim=cfg.glyph_dim, image_embed_dim=cfg.image_dim,
        use_meanflow=cfg.meanflow)
    model.load_state_dict(to_diffusers({k: v.float().clone() for k, v in tencent_sd.items()}), strict=True)
    return model.eval()


def save_layout(tencent_sd: dict[str, torch.Tensor], layout: str, folder: str, cfg: DiTConfig = TINY15) -> str:
    """Write the weights in a real layout; returns the path users would pick."""
    os.makedirs(folder, exist_ok=True)
    if layout == "tencent":  # transformer/<version>/diffusion_pytorch_model.safetensors (+ its config.json)
        path = os.path.join(folder, "transformer", "480p_t2v", "diffusion_pytorch_model.safetensors")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        save_file(tencent_sd, path)
        return path
    if layout == "comfy":
        path = os.path.join(folder, "hunyuanvideo1.5_480p_t2v_fp16.safetensors")
        save_file({k: v.half() for k, v in fused(tencent_sd).items()}, path)
        return path
    if layout == "comfy_prefixed":
        path = os.path.join(folder, "hunyuanvideo1.5_720p_i2v_fp16.safetensors")
        save_file({"model.diffusion_model." + k: v for k, v in fused(tencent_sd).items()}, path)
        return path
    if layout == "diffusers":
        root = os.path.join(folder, "HunyuanVideo-1.5-Diffusers")
        diffusers_model(tencent_sd, cfg).save_pretrained(os.path.join(root, "transformer"), max_shard_size="2MB",
                                                        safe_serialization=True)
        with open(os.path.join(root, "model_index.json"), "w") as f:
            json.dump({"_class_name": "HunyuanVideo15Pipeline"}, f)
        return root
    if layout == "fp8_scaled":
        path = os.path.join(folder, "hunyuanvideo1.5_480p_t2v_cfg_distilled_fp8_scaled.safetensors")
        out = {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}
        for k, v in fused(tencent_sd).items():
            if k.startswith("double_blocks.") and k.endswith(".weight") and v.dim() == 2:
                scale = v.abs().max().float() / 448.0
                out[k] = (v.float() / scale).to(torch.float8_e4m3fn)
                out[k[: -len("weight")] + "scale_weight"] = scale.reshape(())
            else:
                out[k] = v.half()
        save_file(out, path)
        return path
    raise ValueError(layout)


def dequantised(path: str) -> dict[str, torch.Tensor]:
    """What a scaled-fp8 file's weights really are (fp8 × scale), with the Tencent split names."""
    from safetensors.torch import load_file

    sd = load_file(path)
    out = {}
    for k, v in sd.items():
        if k == "scaled_fp8" or k.endswith(".scale_weight"):
            continue
        scale = sd.get(k[: -len("weight")] + "scale_weight") if k.endswith(".weight") else None
        out[k] = v.float() * scale.float() if scale is not None else v.float()
    split = {}
    for k, v in out.items():
        m = re.match(r"(double_blocks\.\d+\.(img|txt)_attn)_qkv\.(weight|bias)$", k)
        if m:
            for part, chunk in zip("qkv", v.chunk(3, dim=0)):
                split[f"{m.group(1)}_{part}.{m.group(3)}"] = chunk.contiguous()
        else:
            split[k] = v
    return split


def dit_inputs(batch: int = 1, cfg: DiTConfig = TINY15, frames: int = 3, height: int = 4, width: int = 6,
               text_len: int = 12, valid=(8,), glyph_valid=(5,), image: bool = False, seed: int = 1) -> dict:
    """Our forward's inputs (padding kept, masks given) — `reference` turns them into diffusers'."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(batch, text_len, dtype=torch.long)
    glyph_mask = torch.zeros(batch, 7, dtype=torch.long)
    for b in range(batch):
        mask[b, :valid[b]] = 1
        glyph_mask[b, :glyph_valid[b]] = 1
    return {"x": torch.randn(batch, cfg.in_channels, frames, height, width, generator=g),
                "timestep": torch.tensor([700.0, 250.0][:batch]),
                "txt": torch.randn(batch, text_len, cfg.text_dim, generator=g), "txt_mask": mask,
                "glyph": torch.randn(batch, 7, cfg.glyph_dim, generator=g), "glyph_mask": glyph_mask,
                "image": torch.randn(batch, 9, cfg.image_dim, generator=g) if image else None}


@torch.no_grad()
def reference_forward(model, inputs: dict, timestep_r=None) -> torch.Tensor:
    batch = inputs["x"].shape[0]
    image = inputs["image"] if inputs["image"] is not None else torch.zeros(batch, 9, model.config.image_embed_dim)
    return model(hidden_states=inputs["x"], timestep=inputs["timestep"], encoder_hidden_states=inputs["txt"],
                 encoder_attention_mask=inputs["txt_mask"], encoder_hidden_states_2=inputs["glyph"],
                 encoder_attention_mask_2=inputs["glyph_mask"], image_embeds=image, timestep_r=timestep_r,
                 return_dict=False)[0]


def meanflow_config(cfg: DiTConfig = TINY15) -> DiTConfig:
    return dataclasses.replace(cfg, meanflow=True)
