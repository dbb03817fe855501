"""How much activation memory a DiT forward needs, measured rather than guessed.

The forward runs on fake tensors (no memory is allocated) through a copy of the model with one block
of each kind — blocks run one after another, so one of each has the whole model's peak — with an O(N)
flash-style attention stub, as a GPU runs it. The result is what the blocks and the glue between them
allocate, weights excluded (they are the streamer's business). Cached per shape and settings.
"""

from __future__ import annotations

import dataclasses
import functools

import torch
from torch.func import functional_call

from ..memory_probe import LiveBytes, fake_mode, flash_attention
from .dit_config import DiTConfig


@functools.lru_cache(maxsize=64)
def forward_peak_bytes(cfg: DiTConfig, x_shape: tuple, text_tokens: int, dtype: torch.dtype, lean: bool,
                       chunk_tokens: int | None, device: str = "cuda") -> int:

    from .dit import HunyuanVideoDiT

    small = dataclasses.replace(cfg, depth_refiner=min(cfg.depth_refiner, 1), depth_double=min(cfg.depth_double, 1),
                                depth_single=min(cfg.depth_single, 1))
    with torch.device("meta"):
        model = HunyuanVideoDiT(small)
    model.lean, model.chunk_tokens, model.compute_dtype = lean, chunk_tokens, dtype
    model.device = torch.device(device)
    with flash_attention():
        with fake_mode():
            params = {n: torch.empty(p.shape, dtype=dtype, device=device) for n, p in model.named_parameters()}
            batch = x_shape[0]
            inputs = dict(x=torch.empty(x_shape, dtype=dtype, device=device),
                          timestep=torch.empty(batch, device=device),
                          txt=torch.empty(batch, text_tokens, cfg.text_dim, dtype=dtype, device=device),
                          pooled=torch.empty(batch, cfg.pooled_dim, dtype=dtype, device=device),
                          guidance=torch.empty(batch, device=device) if cfg.guidance_embed else None)
            probe = LiveBytes(existing=[*params.values(), *(t for t in inputs.values() if t is not None)])
            with probe:
                out = functional_call(model, params, (), inputs)
            del out
    return probe.peak
