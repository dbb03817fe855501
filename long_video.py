"""A long video sampled section by section by a DiT trained for it (its family's SectionSampler), each
section decoded as soon as it is sampled and its frames handed on: the DiT's, the VAE's and the host's memory
stay those of one section, whatever the length. For the nodes and the CLI alike."""

from __future__ import annotations

from collections.abc import Callable

import torch

from . import pipeline
from .errors import InputError
from .sampling.long_video import LongVideoSettings, frames_for_seconds  # noqa: F401  (the front ends' settings)
from .sampling.section_video import SectionVideo
from .vae.tiling import DEFAULT_TILES, Hooks, TileSpec


def section_sampler(dit):
    """The DiT's family's section sampler (refused clearly for a DiT that samples no long video)."""
    return dit.family.section_sampler(dit)


def sample_long_video(dit, positive, negative, start_latent: torch.Tensor, image_states: torch.Tensor,
                      settings: LongVideoSettings, decode: Callable[[torch.Tensor], torch.Tensor] | None,
                      sink: Callable[[torch.Tensor], None] | None, *, loras=(), step_cache=None, on_step=None,
                      on_section: Callable[[int, int], None] | None = None, interrupt=None,
                      spill_dir: str | None = None, spill_as: torch.dtype = torch.float16) -> int:
    """Sample every section, `decode(raw latents)` each (unclamped frames [F, H, W, 3]), cross-fade it into the
    video and hand the finished frames to `sink` in display order. Returns the video's frame count. The DiT's
    fixed parts are on the device only while a section samples; `decode` owns the VAE's device time. decode None:
    sample only (a rank sharing the forwards of a run whose video rank 0 makes; returns 0)."""
    sampler = section_sampler(dit)
    total = sampler.sections(settings)
    height = start_latent.shape[3] * dit.family.latent.space

    def run(denoiser, x, sigmas):
        if interrupt is not None:
            interrupt()
        dit.to_device()
        try:
            return pipeline.run_denoiser(dit, denoiser, x, sigmas, height, loras=loras, on_step=on_step,
                                         interrupt=interrupt, step_cache=step_cache)
        finally:
            dit.release_device()

    if decode is None:
        for k, _ in sampler.sample(dit, positive, negative, start_latent, image_states, settings, run):
            if on_section is not None:
                on_section(k + 1, total)
        return 0
    video = SectionVideo(sampler.overlap_frames(settings), sink, backwards=sampler.backwards(settings),
                         spill_dir=spill_dir, spill_as=spill_as)
    try:
        for k, latents in sampler.sample(dit, positive, negative, start_latent, image_states, settings, run):
            video.add(decode(latents))
            if on_section is not None:
                on_section(k + 1, total)
        return video.finish()
    finally:
        video.close()


def decoder(vae, tiles: TileSpec = DEFAULT_TILES, hooks: Hooks | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """decode for sample_long_video with the VAE on the device for each section only (the CLI's)."""
    def decode(latents: torch.Tensor) -> torch.Tensor:
        vae.to_device()
        try:
            return pipeline.decode(vae, latents, tiles, hooks, clamp=False)
        finally:
            vae.release_device()

    return decode


def check_start_image(image) -> None:
    if not torch.is_tensor(image) or image.dim() != 4 or image.shape[-1] < 3:
        raise InputError("a start IMAGE [N, H, W, 3]", f"{getattr(image, 'shape', type(image).__name__)}",
                         "connect a LoadImage output as the start image")
