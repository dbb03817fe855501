"""Tiny random HunyuanVideo DiTs saved in every real checkpoint layout, plus the diffusers reference.

The Tencent-named state dict is the ground truth. diffusers' own single-file converter
(`convert_hunyuan_video_transformer_to_diffusers`, with its hard-coded hidden size 3072 swapped for the
tiny one) turns it into a diffusers state dict, which must load strictly into diffusers'
`HunyuanVideoTransformer3DModel`: so the Tencent names and shapes are checked by diffusers, not by us.
"""

from __future__ import annotations

import inspect
import json
import os
import re

import torch
from safetensors.torch import save_file

from hystream.families.hunyuan_video.config import DiTConfig
from hystream.families.hunyuan_video.dit import HunyuanVideoDiT

TINY = DiTConfig(in_channels=16, out_channels=16, hidden=256, heads=2, depth_double=2, depth_single=3,
                 depth_refiner=2, mlp_hidden=1024, single_mlp_hidden=1024, refiner_mlp_hidden=1024,
                 text_dim=32, pooled_dim=24, patch=(1, 2, 2), guidance_embed=True)


def tencent_state_dict(cfg: DiTConfig = TINY, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights with Tencent names: norms near 1, the rest scaled by 1/sqrt(fan-in)."""
    with torch.device("meta"):
        skeleton = HunyuanVideoDiT(cfg)
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, p in skeleton.named_parameters():
        if name.endswith("norm.weight") or "norm1" in name or "norm2" in name:
            t = 1 + 0.1 * torch.randn(p.shape, generator=g)
        elif p.dim() == 1:
            t = 0.05 * torch.randn(p.shape, generator=g)
        else:
            fan_in = p[0].numel()
            t = torch.randn(p.shape, generator=g) / fan_in ** 0.5
        sd[name] = t.contiguous()
    return sd


def _converter(hidden: int):
    from diffusers.loaders import single_file_utils

    src = inspect.getsource(single_file_utils.convert_hunyuan_video_transformer_to_diffusers)
    assert "hidden_size = 3072" in src, "diffusers' converter changed; update the test fixture"
    namespace = dict(vars(single_file_utils))
    exec(src.replace("hidden_size = 3072", f"hidden_size = {hidden}"), namespace)  # noqa: S102 - diffusers' own code
    return namespace["convert_hunyuan_video_transformer_to_diffusers"]


def diffusers_model(tencent_sd: dict[str, torch.Tensor], cfg: DiTConfig = TINY, image_condition_type=None):
    """diffusers' transformer holding exactly these weights (fp32), loaded strictly."""
    from diffusers import HunyuanVideoTransformer3DModel

    model = HunyuanVideoTransformer3DModel(
        in_channels=cfg.in_channels, out_channels=cfg.out_channels, num_attention_heads=cfg.heads,
        attention_head_dim=cfg.head_dim, num_layers=cfg.depth_double, num_single_layers=cfg.depth_single,
        num_refiner_layers=cfg.depth_refiner, mlp_ratio=cfg.mlp_hidden / cfg.hidden, patch_size=cfg.patch[1],
        patch_size_t=cfg.patch[0], guidance_embeds=cfg.guidance_embed, text_embed_dim=cfg.text_dim,
        pooled_projection_dim=cfg.pooled_dim, image_condition_type=image_condition_type)
    converted = _converter(cfg.hidden)({k: v.float().clone() for k, v in tencent_sd.items()})
    model.load_state_dict(converted, strict=True)
    return model.eval()


def quantise_scaled_fp8(sd: dict[str, torch.Tensor]):
    """Comfy `scaled_fp8`: block Linear weights → e4m3fn with a per-tensor fp32 scale_weight.
    Returns the file dict and the dequantised weights (what the model should compute with)."""
    out, deq = {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}, {}
    for k, v in sd.items():
        if re.match(r"(double|single)_blocks\.\d+\..*\.weight$", k) and v.dim() == 2:
            scale = v.abs().max().float() / 448.0
            q = (v / scale).to(torch.float8_e4m3fn)
            out[k], out[k[:-len("weight")] + "scale_weight"] = q, scale.reshape(())
            out[k[:-len("weight")] + "scale_input"] = torch.ones(())  # present in Comfy files; unused
            deq[k] = q.float() * scale
        else:
            out[k], deq[k] = v, v
    return out, deq


def quantise_plain_fp8(sd: dict[str, torch.Tensor]):
    """kijai-style fp8_e4m3fn file: block Linear weights cast to fp8 without scales."""
    out, deq = {}, {}
    for k, v in sd.items():
        if re.match(r"(double|single)_blocks\.\d+\..*\.weight$", k) and v.dim() == 2:
            out[k] = v.to(torch.float8_e4m3fn)
            deq[k] = out[k].float()
        else:
            out[k], deq[k] = v, v
    return out, deq


def save_layout(tencent_sd: dict[str, torch.Tensor], layout: str, folder: str, cfg: DiTConfig = TINY) -> tuple[str, dict]:
    """Write the weights in a real layout. Returns (path users would pick, weights the model should use)."""
    os.makedirs(folder, exist_ok=True)
    if layout == "tencent":
        path = os.path.join(folder, "hunyuan_video_720_cfgdistill_bf16.safetensors")
        save_file(tencent_sd, path)
        return path, tencent_sd
    if layout == "comfy":
        path = os.path.join(folder, "hunyuan_video_t2v_720p_bf16.safetensors")
        save_file({"model.diffusion_model." + k: v for k, v in tencent_sd.items()}, path)
        return path, tencent_sd
    if layout == "diffusers":
        root = os.path.join(folder, "HunyuanVideo")
        model = diffusers_model(tencent_sd, cfg)
        model.save_pretrained(os.path.join(root, "transformer"), max_shard_size="2MB", safe_serialization=True)
        with open(os.path.join(root, "model_index.json"), "w") as f:
            json.dump({"_class_name": "HunyuanVideoPipeline"}, f)
        return root, tencent_sd
    if layout == "fp8_scaled":
        q, deq = quantise_scaled_fp8(tencent_sd)
        path = os.path.join(folder, "hunyuan_video_t2v_720p_fp8_scaled.safetensors")
        save_file({"model.diffusion_model." + k: v for k, v in q.items()}, path)
        return path, deq
    if layout == "fp8":
        q, deq = quantise_plain_fp8(tencent_sd)
        path = os.path.join(folder, "hunyuan_video_720_cfgdistill_fp8_e4m3fn.safetensors")
        save_file(q, path)
        return path, deq
    if layout == "pt":
        path = os.path.join(folder, "mp_rank_00_model_states.pt")
        torch.save({"module": tencent_sd}, path)
        return path, tencent_sd
    raise ValueError(layout)


def dit_inputs(batch: int = 1, cfg: DiTConfig = TINY, frames: int = 3, height: int = 6, width: int = 8,
               text_len: int = 12, valid=(8,), seed: int = 1) -> dict[str, torch.Tensor]:
    """Latents, timestep, text states with right padding, pooled vector and guidance (×1000)."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(batch, text_len, dtype=torch.long)
    for b, n in enumerate(valid):
        mask[b, :n] = 1
    return {
        "x": torch.randn(batch, cfg.in_channels, frames, height, width, generator=g),
        "timestep": torch.tensor([700.0, 250.0][:batch]),
        "txt": torch.randn(batch, text_len, cfg.text_dim, generator=g),
        "txt_mask": mask,
        "pooled": torch.randn(batch, cfg.pooled_dim, generator=g),
        "guidance": torch.full((batch,), 6000.0),
    }


@torch.no_grad()
def reference_forward(model, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(hidden_states=inputs["x"], timestep=inputs["timestep"], encoder_hidden_states=inputs["txt"],
                 encoder_attention_mask=inputs["txt_mask"], pooled_projections=inputs["pooled"],
                 guidance=inputs["guidance"], return_dict=False)[0]
