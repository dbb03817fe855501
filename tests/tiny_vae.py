"""Tiny random HunyuanVideo VAEs saved in both layouts users have, and diffusers' as the reference."""

from __future__ import annotations

import os
import re

import torch
from safetensors.torch import save_file

CHANNELS = (32, 32, 64, 64)


def reference_vae(seed: int = 0, channels=CHANNELS, layers: int = 1):
    from diffusers import AutoencoderKLHunyuanVideo

    torch.manual_seed(seed)
    vae = AutoencoderKLHunyuanVideo(block_out_channels=channels, layers_per_block=layers).eval()
    vae.use_framewise_decoding = vae.use_framewise_encoding = False  # untiled reference
    return vae


def to_ldm(sd: dict[str, torch.Tensor], levels: int) -> dict[str, torch.Tensor]:
    """diffusers names → the ldm names of Comfy-Org's repackaged file (ComfyUI's AutoencoderKL with conv3d):
    down.N.block.M / downsample, up.N (numbered from the output end).block.M / upsample, mid.block_1 /
    attn_1 / block_2, nin_shortcut, norm_out; attention projections as 1×1×1 convolutions."""
    out = {}
    for k, v in sd.items():
        n = k.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
        n = re.sub(r"mid_block\.resnets\.0\.", "mid.block_1.", n)
        n = re.sub(r"mid_block\.resnets\.1\.", "mid.block_2.", n)
        m = re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(weight|bias)", n)
        if m:
            part = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}[m.group(2)]
            n = f"{m.group(1)}.mid.attn_1.{part}.{m.group(3)}"
            if part != "norm" and m.group(3) == "weight":
                v = v.reshape(*v.shape, 1, 1, 1)
        n = re.sub(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.", r"encoder.down.\1.block.\2.", n)
        n = re.sub(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", n)
        m = re.match(r"decoder\.up_blocks\.(\d+)\.(resnets\.(\d+)|upsamplers\.0)\.(.*)", n)
        if m:
            level = levels - 1 - int(m.group(1))
            inner = f"block.{m.group(3)}" if m.group(3) is not None else "upsample"
            n = f"decoder.up.{level}.{inner}.{m.group(4)}"
        out[n] = v.contiguous()
    return out


def save_vae(ref, layout: str, folder: str) -> str:
    os.makedirs(folder, exist_ok=True)
    sd = {k: v.detach().clone() for k, v in ref.state_dict().items()}
    if layout == "diffusers_file":  # Tencent / kijai: diffusers-style names in one file
        path = os.path.join(folder, "hunyuan_video_vae_bf16.safetensors")
        save_file(sd, path)
        return path
    if layout == "comfy":
        path = os.path.join(folder, "hunyuan_video_vae_bf16.safetensors")
        save_file(to_ldm(sd, len(ref.config.block_out_channels)), path)
        return path
    if layout == "diffusers_folder":
        root = os.path.join(folder, "HunyuanVideo")
        ref.save_pretrained(os.path.join(root, "vae"), safe_serialization=True)
        return root
    raise ValueError(layout)


def stationary_latents(t: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Smooth, statistically homogeneous latents (sums of plane waves): every tile sees the same
    statistics, as tiles of a natural video do for a trained VAE."""
    g = torch.Generator().manual_seed(seed)
    tt, yy, xx = torch.meshgrid(torch.arange(t).float(), torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    z = torch.zeros(1, 16, t, h, w)
    for c in range(16):
        for _ in range(3):
            f = torch.rand(3, generator=g) * 1.5 + 1.0
            phase = torch.rand(1, generator=g) * 6.283
            z[0, c] += torch.sin(f[0] * tt + f[1] * yy + f[2] * xx + phase) / 3
    return z
