"""A tiny random FramePack DiT in the layout users have it in (diffusers names: lllyasviel's folders, kijai's
single files), for the demo, the host tests and the example workflow. Noise, not trained weights."""

from __future__ import annotations

import dataclasses
import re

import torch

from ...loaders.siglip_loader import HEAD_DIM
from .config import DiTConfig
from .demo import random_dit_state_dict
from .keys import DIFFUSERS_TO_TENCENT, SWAPPED

SIGLIP_WIDTH = 2 * HEAD_DIM  # the demo SigLIP's width (two heads of the real 72)
FILE = ("diffusion_models", "FramePackI2V_HY_bf16.safetensors")
F1_FILE = ("diffusion_models", "FramePack_F1_I2V_HY_20250503_bf16.safetensors")


def framepack_config(base: DiTConfig) -> DiTConfig:
    return dataclasses.replace(base, image_proj_dim=SIGLIP_WIDTH)


def to_diffusers(sd: dict[str, torch.Tensor], cfg: DiTConfig) -> dict[str, torch.Tensor]:
    """Our names → diffusers' (fused projections split into their parts), the inverse of keys.py's recipes."""
    rows = {3: [cfg.hidden] * 3, 4: [cfg.hidden] * 3 + [cfg.single_mlp_hidden]}
    out, used = {}, set()
    for target, parts in DIFFUSERS_TO_TENCENT:
        pattern = re.compile(re.escape(target).replace(re.escape("{n}"), r"(\d+)") + r"\.(weight|bias)$")
        for name, tensor in sd.items():
            m = pattern.match(name)
            if not m:
                continue
            n, suffix = (m.group(1), m.group(2)) if "{n}" in target else (None, m.group(1))
            names = [p.format(n=n) + "." + suffix for p in parts]
            if target in SWAPPED:  # its halves are stored the other way round: swapping is its own inverse
                tensor = torch.cat(tensor.chunk(2)[::-1])
            pieces = tensor.split(rows[len(parts)]) if len(parts) > 1 else [tensor]
            out.update({k: v.contiguous() for k, v in zip(names, pieces)})
            used.add(name)
    missing = sorted(set(sd) - used)
    if missing:
        raise ValueError(f"no diffusers name for {missing[:4]}")
    return out


def write_framepack_dit(folder: str, base: DiTConfig, seed: int = 7, name: str = FILE[1]) -> str:
    import os

    from safetensors.torch import save_file

    cfg = framepack_config(base)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    save_file(to_diffusers(random_dit_state_dict(cfg, seed), cfg), path)
    return path
