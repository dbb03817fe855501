"""Tiled decode and encode: peak memory bounded by the tile, not by the video.

Tiles overlap in time and space and are blended: every output sample is Σ wᵢ·tileᵢ / Σ wᵢ with weights
that ramp linearly across each overlap (feathered edges), so seams vanish and a sample covered by one
tile is exactly that tile. Weights are separable (time × height × width), so the normaliser is the outer
product of three 1D sums. Decoded tiles go to a CPU output buffer as soon as they finish: the device
never holds the whole video.

Time is causal: latent frame 0 is video frame 0, latent frame k ≥ 1 is video frames 4k−3 … 4k. A tile
that starts at latent a > 0 also decodes latent a−1 as warm-up context and drops that frame's output
(encoding: starts at video frame 4(a−1), the last frame of latent a−1, and drops the first latent).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import InputError

log = logging.getLogger("hystream")


@dataclass(frozen=True)
class TileSpec:
    """Tile sizes in pixel units (what the nodes show). 0 tile = automatic."""

    size: int = 256
    overlap: int = 64
    temporal: int = 64
    temporal_overlap: int = 16

    def latent(self, space: int = 8, time: int = 4) -> tuple[int, int, int, int]:
        return self.size // space, self.overlap // space, self.temporal // time, self.temporal_overlap // time


DEFAULT_TILES = TileSpec()  # the default argument (frozen: one instance serves every call)


def check_tiles(spec: TileSpec, space: int = 8, time: int = 4) -> None:
    def bad(what, found, fix):
        raise InputError(what, found, fix)

    if spec.size and (spec.size < 4 * space or spec.size % space):
        bad(f"tile_size 0 (auto) or a multiple of {space} of at least {4 * space} px", f"{spec.size}",
            "use 256 (the default) or 0 for automatic")
    if spec.overlap < 0 or spec.overlap % space or (spec.size and spec.overlap >= spec.size // 2 + 1):
        bad(f"tile_overlap a multiple of {space} px, at most half the tile", f"{spec.overlap} with tile {spec.size}",
            "use 64 (the default), or a smaller overlap than half the tile size")
    if spec.temporal and (spec.temporal < 2 * time or spec.temporal % time):
        bad(f"temporal_tile 0 (auto) or a multiple of {time} frames of at least {2 * time}", f"{spec.temporal}",
            "use 64 (the default)")
    if spec.temporal_overlap < 0 or spec.temporal_overlap % time or (
            spec.temporal and spec.temporal_overlap >= spec.temporal // 2 + 1):
        bad(f"temporal_overlap a multiple of {time} frames, at most half the temporal tile",
            f"{spec.temporal_overlap} with temporal tile {spec.temporal}", "use 16 (the default)")


def tile_ranges(n: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """Cover [0, n) with tiles of `tile` overlapping by at least `overlap`; the last tile is aligned to
    the end (full size) instead of being a sliver."""
    if tile <= 0 or n <= tile:
        return [(0, n)]
    stride = tile - overlap
    starts = list(range(0, n - tile, stride)) + [n - tile]
    return [(s, s + tile) for s in starts]


def ramp_weights(spans: list[tuple[int, int]]) -> list[torch.Tensor]:
    """1D blend weights of each tile (spans in output units): linear ramps across the overlaps."""
    weights = []
    for k, (a, b) in enumerate(spans):
        w = torch.ones(b - a)
        if k > 0 and (ov := spans[k - 1][1] - a) > 0:
            w[:ov] = torch.minimum(w[:ov], torch.arange(1, ov + 1) / (ov + 1))
        if k + 1 < len(spans) and (ov := b - spans[k + 1][0]) > 0:
            w[-ov:] = torch.minimum(w[-ov:], torch.arange(ov, 0, -1) / (ov + 1))
        weights.append(w)
    return weights


def coverage(spans: list[tuple[int, int]], weights: list[torch.Tensor], length: int) -> torch.Tensor:
    """Σ of the tiles' weights at every output position: the blend's normaliser along one axis."""
    total = torch.zeros(length)
    for (a, b), w in zip(spans, weights):
        total[a:b] += w
    return total


def frame_span(a: int, b: int, time: int = 4) -> tuple[int, int]:
    """Video frames produced by latent frames [a, b)."""
    return (0 if a == 0 else time * a - (time - 1)), time * (b - 1) + 1


@dataclass
class Hooks:
    progress: Callable[[int, int], None] | None = None  # (tiles done, tiles total)
    interrupt: Callable[[], None] | None = None  # raises to stop between tiles
    # ranks sharing the decode (parallel.group.SequenceGroup: rank, world, send_to_leader, receive_from): tile i
    # is decoded by rank i mod world; rank 0 receives the others' in order and blends every tile as alone
    ranks: object = None
    tiles_here: int = 0  # tiles this process decoded itself (set by decode_tiled)


def _grid(t: int, h: int, w: int, lt: int, ot: int, ls: int, os_: int):
    return tile_ranges(t, lt, ot), tile_ranges(h, ls, os_), tile_ranges(w, ls, os_)


@torch.no_grad()
def decode_tiled(vae, z: torch.Tensor, spec: TileSpec, hooks: Hooks | None = None, clamp: bool = True) -> torch.Tensor:
    """Raw latents [B, C, T, h, w] → IMAGE frames [B·F, s·h, s·w, 3] in [0, 1], float32 on the CPU (not clamped
    with clamp=False: for frames blended further, as a long video's sections are, before the clamp). With
    hooks.ranks, the ranks share the tiles and only rank 0 returns the frames (the others: None)."""
    cfg = vae.cfg
    hooks = hooks or Hooks()
    if z.dim() != 5 or z.shape[1] != cfg.latent_channels:
        s = cfg.space_compression
        raise InputError(f"latents [B, {cfg.latent_channels}, T, H/{s}, W/{s}]", f"shape {list(z.shape)}",
                         f"connect a LATENT made for this VAE ({cfg.latent_channels} channels), e.g. from the HyStream "
                         "sampler with a DiT of the same model family")
    check_tiles(spec, cfg.space_compression, cfg.time_compression)
    s, tc = cfg.space_compression, cfg.time_compression
    ls, os_, lt, ot = spec.latent(s, tc)
    b, _, t, h, w = z.shape
    frames, height, width = frame_span(0, t, tc)[1], h * s, w * s
    t_ranges, y_ranges, x_ranges = _grid(t, h, w, lt, ot, ls, os_)
    spans = ([frame_span(a, e, tc) for a, e in t_ranges], [(a * s, e * s) for a, e in y_ranges],
             [(a * s, e * s) for a, e in x_ranges])
    wt, wy, wx = (ramp_weights(sp) for sp in spans)
    norm_t, norm_y, norm_x = (coverage(sp, ws, n) for sp, ws, n in zip(spans, (wt, wy, wx), (frames, height, width)))
    rank, world = (hooks.ranks.rank, hooks.ranks.world) if hooks.ranks is not None else (0, 1)
    out = torch.zeros(b * frames, height, width, 3, dtype=torch.float32) if rank == 0 else None
    total, done = b * len(t_ranges) * len(y_ranges) * len(x_ranges), 0
    for bi in range(b):
        video = out[bi * frames:(bi + 1) * frames] if out is not None else None
        for ti, (ta, tb) in enumerate(t_ranges):
            f0, f1 = frame_span(ta, tb, tc)
            ctx = 1 if ta > 0 else 0
            for yi, (ya, yb) in enumerate(y_ranges):
                for xi, (xa, xb) in enumerate(x_ranges):
                    owner = done % world
                    if owner == rank:
                        if hooks.interrupt:
                            hooks.interrupt()
                        tile = vae.decode(z[bi:bi + 1, :, ta - ctx:tb, ya:yb, xa:xb])[0, :, ctx:]
                        tile = tile.permute(1, 2, 3, 0).float().cpu()
                        hooks.tiles_here += 1
                        if rank != 0:
                            hooks.ranks.send_to_leader(tile)
                    elif rank == 0:
                        tile = hooks.ranks.receive_from(owner, (f1 - f0, (yb - ya) * s, (xb - xa) * s, 3))
                    done += 1
                    if rank != 0:
                        continue
                    weight = (wt[ti][:, None, None] * wy[yi][None, :, None] * wx[xi][None, None, :])
                    video[f0:f1, ya * s:yb * s, xa * s:xb * s] += tile * weight[..., None]
                    del tile
                    if hooks.progress:
                        hooks.progress(done, total)
        if video is not None:
            video /= (norm_t[:, None, None] * norm_y[None, :, None] * norm_x[None, None, :])[..., None]
    if out is None:
        return None
    out.mul_(0.5).add_(0.5)
    return out.clamp_(0, 1) if clamp else out


@torch.no_grad()
def encode_tiled(vae, frames: torch.Tensor, spec: TileSpec, *, sample: bool = False, seed: int = 0,
                 hooks: Hooks | None = None) -> torch.Tensor:
    """IMAGE frames [F, H, W, 3] in [0, 1] (F = tk+1, H and W multiples of s) → raw latents
    [1, C, (F−1)/t+1, H/s, W/s] (t, s: the VAE's time and space compression), float32 on the CPU: the posterior
    mean, or a sample drawn from a CPU generator seeded with `seed` (the same draw diffusers makes)."""
    cfg = vae.cfg
    hooks = hooks or Hooks()
    s, tc = cfg.space_compression, cfg.time_compression
    if vae.encoder is None:
        raise InputError("a VAE file with an encoder (for video-to-video)", "a decoder-only VAE file",
                         "use the full VAE file of the model family (with its encoder)")
    if frames.dim() != 4 or frames.shape[-1] != 3:
        raise InputError("IMAGE frames [F, H, W, 3]", f"shape {list(frames.shape)}", "connect an IMAGE (video frames)")
    n, height, width, _ = frames.shape
    if (n - 1) % tc or height % s or width % s:
        raise InputError(f"{tc}k+1 frames of a size that is a multiple of {s}",
                         f"{n} frames of {width}×{height}", "crop the video (HyStreamVAEEncode crops for you) "
                         f"to e.g. {(n - 1) // tc * tc + 1} frames of {width // s * s}×{height // s * s}")
    check_tiles(spec, s, tc)
    ls, os_, lt, ot = spec.latent(s, tc)
    t, h, w = (n - 1) // tc + 1, height // s, width // s
    t_ranges, y_ranges, x_ranges = _grid(t, h, w, lt, ot, ls, os_)
    wt, wy, wx = (ramp_weights(r) for r in (t_ranges, y_ranges, x_ranges))  # blended in latent units
    norm = (coverage(t_ranges, wt, t)[:, None, None] * coverage(y_ranges, wy, h)[None, :, None]
            * coverage(x_ranges, wx, w)[None, None, :])
    moments = torch.zeros(1, 2 * cfg.latent_channels, t, h, w)
    total, done = len(t_ranges) * len(y_ranges) * len(x_ranges), 0
    for ti, (ta, tb) in enumerate(t_ranges):
        f0 = 0 if ta == 0 else tc * (ta - 1)
        f1 = frame_span(0, tb, tc)[1]
        ctx = 1 if ta > 0 else 0
        for yi, (ya, yb) in enumerate(y_ranges):
            for xi, (xa, xb) in enumerate(x_ranges):
                if hooks.interrupt:
                    hooks.interrupt()
                clip = frames[f0:f1, ya * s:yb * s, xa * s:xb * s].permute(3, 0, 1, 2)[None]
                tile = vae.encode_moments(clip.to(vae.device, vae.dtype) * 2 - 1)[:, :, ctx:].float().cpu()
                weight = wt[ti][:, None, None] * wy[yi][None, :, None] * wx[xi][None, None, :]
                moments[:, :, ta:tb, ya:yb, xa:xb] += tile * weight
                done += 1
                if hooks.progress:
                    hooks.progress(done, total)
    moments /= norm
    mean, logvar = moments.chunk(2, dim=1)
    if not sample:
        return mean
    std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
    noise = torch.randn(mean.shape, generator=torch.Generator("cpu").manual_seed(seed), dtype=torch.float32)
    return mean + std * noise


def crop_for_encode(frames: torch.Tensor, time: int = 4, multiple: int = 16) -> torch.Tensor:
    """The documented crop of HyStreamVAEEncode: keep the first tk+1 frames and center-crop width and
    height down to multiples of `multiple` (what the VAE and the DiT's patches take), with a warning saying
    what was cut."""
    n, height, width, _ = frames.shape
    keep = (n - 1) // time * time + 1
    new_h, new_w = height // multiple * multiple, width // multiple * multiple
    if not keep or not new_h or not new_w:
        raise InputError(f"at least 1 frame of at least {multiple}×{multiple} px", f"{n} frames of {width}×{height}",
                         "load a larger video")
    if (keep, new_h, new_w) != (n, height, width):
        log.warning("HyStream: cropped the video from %d frames of %dx%d to %d frames of %dx%d (the VAE needs %dk+1 "
                    "frames, the DiT sides that are multiples of %d)", n, width, height, keep, new_w, new_h, time,
                    multiple)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    return frames[:keep, top:top + new_h, left:left + new_w]
