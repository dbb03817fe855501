"""HunyuanVideo 1.5's DiT activation peak at a size: a reduced copy (one refiner and one dual-stream block)
run on fake tensors by models/forward_memory.py, with the context a run has (the prompt's states, the
glyph text's, the start image's). Cached per shape and settings."""

from __future__ import annotations

import dataclasses
import functools

import torch

from ...models.forward_memory import forward_peak
from ...parallel.group import EstimateGroup
from .config import DiTConfig
from .dit import HunyuanVideo15DiT

IMAGE_TOKENS = 729  # SigLIP's 27 × 27 patches, an image-to-video run's image context
GLYPH_TOKENS = 256  # the glyph text's budget (ByT5)


@functools.lru_cache(maxsize=64)
def forward_peak_bytes(cfg: DiTConfig, x_shape: tuple, text_tokens: int, dtype: torch.dtype, lean: bool,
                       chunk_tokens: int | None, device: str = "cuda", kernel: str = "flash",
                       stored: torch.dtype | str | None = None, lora_rank: int = 0, ranks: int = 1) -> int:
    """text_tokens: every context token of a DiT call (prompt + glyph text + image); counted as prompt
    tokens, which the refiner also sees (the most a context of that length can cost)."""
    small = dataclasses.replace(cfg, depth_refiner=min(cfg.depth_refiner, 1), depth=min(cfg.depth, 1))
    with torch.device("meta"):
        model = HunyuanVideo15DiT(small)
    model.lean, model.chunk_tokens, model.compute_dtype = lean, chunk_tokens, dtype
    model.device = torch.device(device)
    if ranks > 1:  # one rank's share of a forward spread over `ranks` (sequence parallelism)
        model.spread_over(EstimateGroup(ranks))
    batch = x_shape[0]

    def inputs() -> dict:
        x = (batch, cfg.in_channels, *x_shape[2:])
        return {"x": torch.empty(x, dtype=dtype, device=device), "timestep": torch.empty(batch, device=device),
                "txt": torch.empty(batch, max(1, text_tokens), cfg.text_dim, dtype=dtype, device=device),
                "timestep_r": torch.empty(batch, device=device) if cfg.meanflow else None}

    return forward_peak(model, list(model.double_blocks), inputs, dtype=dtype, device=device, kernel=kernel,
                        stored=stored, lora_rank=lora_rank)
