"""Tiny random HunyuanVideo checkpoints in the real key layouts, for the demo and smoke runs.

They exercise exactly the code paths of the real files (layout detection, lazy loading, streaming),
at a size that runs in seconds on any CPU. The output is noise: these are not trained weights.
"""

from __future__ import annotations

import os

import torch

from .models.dit import HunyuanVideoDiT
from .models.dit_config import DiTConfig

TINY_DIT = DiTConfig(hidden=256, heads=2, depth_double=2, depth_single=4, depth_refiner=1, mlp_hidden=1024,
                     single_mlp_hidden=1024, refiner_mlp_hidden=1024, text_dim=64, pooled_dim=32)


def random_dit_state_dict(cfg: DiTConfig = TINY_DIT, seed: int = 0, dtype=torch.bfloat16) -> dict[str, torch.Tensor]:
    """Tencent-named weights: norms near 1, matrices scaled by 1/sqrt(fan-in)."""
    with torch.device("meta"):
        names = [(n, tuple(p.shape)) for n, p in HunyuanVideoDiT(cfg).named_parameters()]
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, shape in names:
        t = torch.randn(shape, generator=g)
        if "norm" in name:
            t = 1 + 0.1 * t
        elif len(shape) > 1:
            t = t / (t[0].numel() ** 0.5)
        else:
            t = 0.05 * t
        sd[name] = t.to(dtype).contiguous()
    return sd


def write_comfy_dit(folder: str, cfg: DiTConfig = TINY_DIT, seed: int = 0) -> str:
    """The DiT as Comfy-Org ships it (model.diffusion_model. prefix, bf16)."""
    from safetensors.torch import save_file

    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "hunyuan_video_t2v_720p_bf16.safetensors")
    save_file({"model.diffusion_model." + k: v for k, v in random_dit_state_dict(cfg, seed).items()}, path)
    return path
