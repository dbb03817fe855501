"""Tiny random HunyuanVideo 1.5 DiTs with Tencent's names (q/k/v apart) and as Comfy-Org repackages them (q/k/v
fused, fp16), for the demo, the smoke run and the tests. The output is noise: these are not trained weights."""

from __future__ import annotations

import os
import re

import torch

from .config import DiTConfig
from .dit import HunyuanVideo15DiT

COMFY_DIT = "hunyuanvideo1.5_480p_t2v_fp16.safetensors"
COMFY_I2V_DIT = "hunyuanvideo1.5_480p_i2v_fp16.safetensors"
_SPLIT_QKV = re.compile(r"(double_blocks\.\d+\.(img|txt)_attn)_qkv\.(weight|bias)$")
_PART = re.compile(r"(double_blocks\.\d+\.(img|txt)_attn)_([qkv])\.(weight|bias)$")


def tencent_state_dict(cfg: DiTConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights with Tencent's names (q/k/v apart), fp32: norms near 1, the rest scaled by 1/sqrt(fan-in)."""
    with torch.device("meta"):
        skeleton = HunyuanVideo15DiT(cfg)
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, p in skeleton.named_parameters():
        if re.search(r"norm\d?\.weight$|layernorm\.weight$|proj\.[04]\.weight$|_norm\.weight$", name):
            t = 1 + 0.1 * torch.randn(p.shape, generator=g)
        elif p.dim() == 1:
            t = 0.05 * torch.randn(p.shape, generator=g)
        else:
            t = torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5
        m = _SPLIT_QKV.match(name)
        if m:
            for part, chunk in zip("qkv", t.chunk(3, dim=0)):
                sd[f"{m.group(1)}_{part}.{m.group(3)}"] = chunk.contiguous()
        else:
            sd[name] = t.contiguous()
    return sd


def fused(tencent_sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The Comfy-Org repackaging: each block's q/k/v stored as one tensor, rows q | k | v."""
    out = {}
    for k, v in tencent_sd.items():
        m = _PART.match(k)
        if not m:
            out[k] = v
        elif m.group(3) == "q":
            out[f"{m.group(1)}_qkv.{m.group(4)}"] = torch.cat(
                [tencent_sd[f"{m.group(1)}_{p}.{m.group(4)}"] for p in "qkv"]).contiguous()
    return out


def write_comfy_dit(folder: str, cfg: DiTConfig, seed: int = 0, name: str = COMFY_DIT) -> str:
    """The DiT as Comfy-Org ships it (q/k/v fused, fp16); returns the file."""
    from safetensors.torch import save_file

    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    save_file({k: v.half() for k, v in fused(tencent_state_dict(cfg, seed)).items()}, path)
    return path
