"""Tiny random HunyuanVideo VAEs saved in both layouts users have, and diffusers' as the reference."""

from __future__ import annotations

import os

import torch
from safetensors.torch import save_file

from hystream.families.hunyuan_video.demo import vae_to_ldm as to_ldm

CHANNELS = (32, 32, 64, 64)


def reference_vae(seed: int = 0, channels=CHANNELS, layers: int = 1):
    from diffusers import AutoencoderKLHunyuanVideo

    torch.manual_seed(seed)
    vae = AutoencoderKLHunyuanVideo(block_out_channels=channels, layers_per_block=layers).eval()
    vae.use_framewise_decoding = vae.use_framewise_encoding = False  # untiled reference
    return vae


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
