"""A tiny random HunyuanVideo 1.5 VAE in the layouts users have, for tests, the demo and smoke runs:
Comfy-Org / Tencent names in one file, or a diffusers `vae/` folder (config.json + weights) that diffusers'
`AutoencoderKLHunyuanVideo15.from_pretrained` reads. The output is noise: these are not trained weights.
"""

from __future__ import annotations

import json
import os
import re

import torch

from .vae import SCALING_FACTOR, HunyuanVideo15VAE, VAEConfig

# the real 16× / 4× geometry and 32 latent channels at a tiny width: the encoder's last width must be a
# multiple of 64 (mean | log-variance averaged from it), each resampler's width ratio must divide evenly
TINY_VAE = VAEConfig(block_out_channels=(8, 8, 16, 64, 64), layers_per_block=1)
FILE_NAME = "hunyuanvideo15_vae_fp16.safetensors"  # Comfy-Org's name (models/vae)
LAYOUTS = ("comfy", "diffusers")

_OURS_TO_DIFFUSERS = [
    (r"^encoder\.down\.(\d+)\.block\.(\d+)\.", r"encoder.down_blocks.\1.resnets.\2."),
    (r"^encoder\.down\.(\d+)\.downsample\.", r"encoder.down_blocks.\1.downsamplers.0."),
    (r"^decoder\.up\.(\d+)\.block\.(\d+)\.", r"decoder.up_blocks.\1.resnets.\2."),
    (r"^decoder\.up\.(\d+)\.upsample\.", r"decoder.up_blocks.\1.upsamplers.0."),
    (r"^(encoder|decoder)\.mid\.block_1\.", r"\1.mid_block.resnets.0."),
    (r"^(encoder|decoder)\.mid\.block_2\.", r"\1.mid_block.resnets.1."),
    (r"^(encoder|decoder)\.mid\.attn_1\.([qkv])\.", r"\1.mid_block.attentions.0.to_\2."),
    (r"^(encoder|decoder)\.mid\.attn_1\.", r"\1.mid_block.attentions.0."),
]


def ours_to_diffusers(name: str) -> str:
    for pattern, repl in _OURS_TO_DIFFUSERS:
        name = re.sub(pattern, repl, name)
    return name


def diffusers_config(cfg: VAEConfig) -> dict:
    """config.json of diffusers' AutoencoderKLHunyuanVideo15 for `cfg`."""
    return {"_class_name": "AutoencoderKLHunyuanVideo15", "in_channels": cfg.in_channels,
            "out_channels": cfg.in_channels, "latent_channels": cfg.latent_channels,
            "block_out_channels": list(cfg.block_out_channels), "layers_per_block": cfg.layers_per_block,
            "spatial_compression_ratio": cfg.space_compression, "temporal_compression_ratio": cfg.time_compression,
            "downsample_match_channel": True, "upsample_match_channel": True, "scaling_factor": SCALING_FACTOR}


def random_state_dict(cfg: VAEConfig = TINY_VAE, seed: int = 0, dtype: torch.dtype = torch.float16,
                      residual_scale: float = 1.0) -> dict[str, torch.Tensor]:
    """Our (Tencent) names: norm gains near 1, kernels scaled by 1/√fan-in, small biases. `residual_scale`
    shrinks every branch that has a parameter-free shortcut beside it (resnets, attention, resamplers,
    decoder input, encoder output): a VAE that is mostly its shortcuts is smooth and local, as a trained
    one is, so tiles see what the whole video sees."""
    with torch.device("meta"):
        shapes = {n: tuple(p.shape) for n, p in HunyuanVideo15VAE(cfg).named_parameters()}
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, shape in shapes.items():
        t = torch.randn(shape, generator=g)
        if name.endswith(".gamma"):
            t = 1 + 0.1 * t
        elif name.endswith(".weight"):
            t = t / (t[0].numel() ** 0.5)
        else:
            t = 0.02 * t
        if re.search(r"(\.conv2\.conv|\.proj_out|sample\.conv\.conv|decoder\.conv_in\.conv|encoder\.conv_out\.conv)\.", name):
            t = t * residual_scale
        sd[name] = t.to(dtype).contiguous()
    return sd


def write_vae(folder: str, layout: str = "comfy", *, cfg: VAEConfig = TINY_VAE, seed: int = 0,
              dtype: torch.dtype = torch.float16, residual_scale: float = 1.0, decoder_only: bool = False,
              name: str = FILE_NAME) -> str:
    """Write a random VAE; returns the file (comfy) or the pipeline folder holding `vae/` (diffusers)."""
    from safetensors.torch import save_file

    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r}: one of {LAYOUTS}")
    sd = random_state_dict(cfg, seed, dtype, residual_scale)
    if decoder_only:
        sd = {k: v for k, v in sd.items() if k.startswith("decoder.")}
    if layout == "comfy":
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, name)
        save_file(sd, path)
        return path
    vae_dir = os.path.join(folder, "vae")
    os.makedirs(vae_dir, exist_ok=True)
    save_file({ours_to_diffusers(k): v for k, v in sd.items()}, os.path.join(vae_dir, "diffusion_pytorch_model.safetensors"))
    with open(os.path.join(vae_dir, "config.json"), "w", encoding="utf-8") as f:
        json.dump(diffusers_config(cfg), f, indent=2)
    return folder
