"""The VAE stage's entry points: tiled decode and encode with automatic tile sizes resolved first."""

from __future__ import annotations

import torch

from .planning import auto_tiles
from .tiling import DEFAULT_TILES, Hooks, TileSpec, check_tiles, crop_for_encode, decode_tiled, encode_tiled


def decode(vae, latents: torch.Tensor, spec: TileSpec = DEFAULT_TILES, hooks: Hooks | None = None,
           budget_bytes: int | None = None, clamp: bool = True) -> torch.Tensor:
    """Raw latents [B, C, T, h, w] → IMAGE [B·F, H, W, 3] in [0, 1] (CPU, float32; unclamped with clamp=False)."""
    check_tiles(spec, vae.cfg.space_compression, vae.cfg.time_compression)
    spec = auto_tiles(vae, spec, tuple(latents.shape), budget_bytes, "decode")
    return decode_tiled(vae, latents, spec, hooks, clamp)


def encode(vae, frames: torch.Tensor, spec: TileSpec = DEFAULT_TILES, *, crop: bool = True, sample: bool = False,
           seed: int = 0, hooks: Hooks | None = None, budget_bytes: int | None = None,
           multiple: int | None = None) -> torch.Tensor:
    """IMAGE [F, H, W, 3] in [0, 1] → raw latents [1, C, T, H/s, W/s] (CPU, float32). With `crop`, the
    video is first cut to tk+1 frames and sides that are multiples of `multiple` (see crop_for_encode)."""
    if crop:
        frames = crop_for_encode(frames, vae.cfg.time_compression, multiple or 2 * vae.cfg.space_compression)
    check_tiles(spec, vae.cfg.space_compression, vae.cfg.time_compression)
    n, height, width, _ = frames.shape
    s, tc = vae.cfg.space_compression, vae.cfg.time_compression
    shape = (1, vae.cfg.latent_channels, (n - 1) // tc + 1, height // s, width // s)
    spec = auto_tiles(vae, spec, shape, budget_bytes, "encode")
    return encode_tiled(vae, frames, spec, sample=sample, seed=seed, hooks=hooks)
