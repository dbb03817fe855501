"""HunyuanVideo's DiT activation peak at a size: a reduced copy (one refiner, one double and one single
block) run on fake tensors by models/forward_memory.py. Cached per shape and settings."""

from __future__ import annotations

import dataclasses
import functools

import torch

from ...models.forward_memory import forward_peak
from ...parallel.group import EstimateGroup
from .config import DiTConfig
from .dit import HunyuanVideoDiT


@functools.lru_cache(maxsize=64)
def forward_peak_bytes(cfg: DiTConfig, x_shape: tuple, text_tokens: int, dtype: torch.dtype, lean: bool,
                       chunk_tokens: int | None, device: str = "cuda", kernel: str = "flash",
                       stored: torch.dtype | str | None = None, lora_rank: int = 0, ranks: int = 1) -> int:
    """stored: the dtype the blocks' Linear weights are kept in (None = the compute dtype; see
    models/forward_memory.forward_peak). lora_rank: LoRA adapters of this rank on every Linear."""
    small = dataclasses.replace(cfg, depth_refiner=min(cfg.depth_refiner, 1), depth_double=min(cfg.depth_double, 1),
                                depth_single=min(cfg.depth_single, 1))
    with torch.device("meta"):
        model = HunyuanVideoDiT(small)
    model.lean, model.chunk_tokens, model.compute_dtype = lean, chunk_tokens, dtype
    model.device = torch.device(device)
    if ranks > 1:  # one rank's share of a forward spread over `ranks` (sequence parallelism)
        model.spread_over(EstimateGroup(ranks))
    batch = x_shape[0]

    def inputs() -> dict:
        x = (batch, cfg.in_channels, *x_shape[2:])  # an I2V DiT sees the image channels too
        return {"x": torch.empty(x, dtype=dtype, device=device), "timestep": torch.empty(batch, device=device),
                "txt": torch.empty(batch, text_tokens, cfg.text_dim, dtype=dtype, device=device),
                "pooled": torch.empty(batch, cfg.pooled_dim, dtype=dtype, device=device),
                "guidance": torch.empty(batch, device=device) if cfg.guidance_embed else None}

    return forward_peak(model, [*model.double_blocks, *model.single_blocks], inputs, dtype=dtype, device=device,
                        kernel=kernel, stored=stored, lora_rank=lora_rank)
