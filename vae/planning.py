"""Tile sizes for a memory budget (tile_size / temporal_tile = 0: automatic).

The decoder's peak grows linearly with the tile's output volume, so it is measured once on a small tile
with fake tensors (no memory is allocated) and scaled; the largest tile whose predicted peak fits the
budget is chosen, largest spatial tile first, then the temporal one.
"""

from __future__ import annotations

import weakref

import torch

from ..errors import BudgetError
from ..memory_probe import fake_peak_bytes
from ..sizes import GIB, automatic_budget
from .tiling import TileSpec, frame_span

CPU_AUTO_BUDGET = 4 * GIB  # on the CPU "device" memory is RAM: keep the VAE stage to a few GiB
MARGIN = 1.1  # over the measured slope: allocator rounding, the output tile's CPU copy


_SLOPES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # vae → {what: bytes per output pixel}


def _bytes_per_output_pixel(vae, what: str) -> float:
    cached = _SLOPES.setdefault(vae, {})
    if what not in cached:
        cached[what] = _measure_slope(vae, what)
    return cached[what]


def _measure_slope(vae, what: str) -> float:
    cfg, dev, dtype = vae.cfg, vae.device, vae.dtype
    t, h, w = 3, 8, 8  # a small probe tile, in latent units
    if what == "decode":
        peak = fake_peak_bytes(vae.decode, ((1, cfg.latent_channels, t, h, w), dtype, dev))
        volume = frame_span(0, t)[1] * h * w * cfg.space_compression ** 2
    else:
        frames = frame_span(0, t)[1]
        s = cfg.space_compression  # the probe tile in pixels: h × w latent cells
        peak = fake_peak_bytes(vae.encode_moments, ((1, cfg.in_channels, frames, h * s, w * s), dtype, dev))
        volume = frames * h * w * cfg.space_compression ** 2
    return peak / volume


def tile_peak_bytes(vae, spec: TileSpec, what: str = "decode") -> int:
    """Predicted peak of one tile of `spec` (pixel units; no zeros) on `vae`'s device."""
    frames = spec.temporal + 1
    return int(_bytes_per_output_pixel(vae, what) * frames * spec.size * spec.size * MARGIN)


def auto_tiles(vae, spec: TileSpec, latent_shape, budget_bytes: int | None, what: str = "decode") -> TileSpec:
    """Fill the zero fields of `spec` with the largest tiles that fit `budget_bytes` (None: free device
    memory on CUDA, CPU_AUTO_BUDGET on the CPU)."""
    if spec.size and spec.temporal:
        return spec
    _, _, t, h, w = latent_shape
    s, tc = vae.cfg.space_compression, vae.cfg.time_compression
    if budget_bytes is None:
        if vae.device.type == "cuda":
            budget_bytes = automatic_budget(torch.cuda.mem_get_info(vae.device)[0])
        else:
            budget_bytes = CPU_AUTO_BUDGET
    # the default temporal tile (64 frames) first and the largest spatial tile in it; shorter tiles only
    # when even small spatial tiles do not fit
    sizes = [spec.size] if spec.size else [n * s for n in range(min(max(h, w), 64), 3, -4)]
    temporals = [spec.temporal] if spec.temporal else [n * tc for n in range(min(max(t - 1, 2), 16), 1, -2)]
    for temporal in temporals:
        for size in sizes:
            overlap = spec.overlap if spec.size else max(s, (size // 4) // s * s)
            t_overlap = spec.temporal_overlap if spec.temporal else min(4 * tc, (temporal // 4) // tc * tc)
            candidate = TileSpec(size, overlap, temporal, t_overlap)
            if tile_peak_bytes(vae, candidate, what) <= budget_bytes:
                return candidate
    smallest = TileSpec(sizes[-1], 0, temporals[-1], 0)
    raise BudgetError(f"at least {tile_peak_bytes(vae, smallest, what) / GIB:.2f} GiB for the smallest VAE tile "
                      f"({smallest.size} px, {smallest.temporal} frames)", f"a budget of {budget_bytes / GIB:.2f} GiB",
                      "free memory on the device, or set tile sizes by hand")
