"""FramePack's sampling, section by section, as its reference does (lllyasviel's demo, diffusers'
HunyuanVideoFramepackPipeline): each section is one ordinary streamed Euler run of `window` latent frames,
conditioned on the start image and a history packed into a fixed number of tokens, so a minute costs what
two seconds cost per section.

Two orders: "inverted" (FramePack's anti-drifting order: the video is generated from its end back to the
start image, the history is what follows the section) and "forward" (FramePack-F1: from the start image on,
the history is what precedes it). Only the history a section reads is kept (19 latent frames, and the
previous section for the VAE's overlap), never the whole video. Noise is drawn for each section from one
generator seeded once, as the reference does."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch

from ...errors import InputError
from ...sampling.denoiser import Denoiser
from ...sampling.euler import cfg_combine
from ...sampling.long_video import LongVideoSettings, SectionSampler
from .conditioning import read_conditioning
from .framepack_dit import PackedHistory
from .vae import SCALING_FACTOR

HISTORY = {"inverted": (1, 2, 16), "forward": (16, 2, 1)}  # latent frames at 1x, 2x, 4x (4x, 2x, 1x forward)
FPS = 30  # FramePack's frame rate: lengths in seconds are frames at 30 fps
TIME = 4  # video frames per latent frame
SHIFT = {"base_seq": 256, "max_seq": 4096, "base_shift": 0.5, "max_shift": 1.15, "exp_max": 7.0}


def window_frames(settings: LongVideoSettings) -> int:
    return (settings.window - 1) * TIME + 1


def section_count(settings: LongVideoSettings) -> int:
    return max(1, (settings.frames + window_frames(settings) - 1) // window_frames(settings))


def section_sigmas(steps: int, tokens: int) -> torch.Tensor:
    """The reference's schedule: σ from 1 to 0, exponentially time-shifted with μ from the section's token
    count (capped at log 7), float32 as FlowMatchEulerDiscreteScheduler computes it; then the terminal 0."""
    slope = (SHIFT["max_shift"] - SHIFT["base_shift"]) / (SHIFT["max_seq"] - SHIFT["base_seq"])
    offset = SHIFT["base_shift"] - slope * SHIFT["base_seq"]
    mu = min(tokens * slope + offset, math.log(SHIFT["exp_max"]))
    sigmas = np.linspace(1.0, 0.0, steps + 1)[:-1].astype(np.float32)
    sigmas = math.exp(mu) / (math.exp(mu) + (1 / sigmas - 1) ** 1.0)
    return torch.cat([torch.from_numpy(np.asarray(sigmas, dtype=np.float32)), torch.zeros(1)])


def latent_paddings(sections: int) -> list[int]:
    """Inverted order: how many windows of empty indices lie between the start image and each section."""
    if sections > 4:
        return [3] + [2] * (sections - 3) + [1, 0]
    return list(reversed(range(sections)))


class SectionHistory:
    """The latents a section reads (the packed history) and gives the VAE (itself and its neighbour), kept
    bounded: the reference's history_latents, trimmed to what is read."""

    def __init__(self, settings: LongVideoSettings, start: torch.Tensor):
        self.s, self.start = settings, start  # start: the image's latent, model space [B, C, 1, H, W]
        b, c, _, h, w = start.shape
        self.latents = torch.zeros(b, c, sum(HISTORY[settings.order]), h, w)
        if settings.order == "forward":
            self.latents = torch.cat([self.latents, start], 2)
        self.generated = 1 if settings.order == "forward" else 0
        self.keep = max(sum(HISTORY[settings.order]), 2 * settings.window + 1)

    def packed(self, k: int) -> PackedHistory:
        s, sizes = self.s, HISTORY[self.s.order]
        if s.order == "inverted":
            pad = latent_paddings(section_count(s))[k] * s.window
            prefix, _, noisy, i1, i2, i4 = torch.arange(1 + pad + s.window + sum(sizes)).split([1, pad, s.window, *sizes])
            h1, h2, h4 = self.latents[:, :, :sum(sizes)].split(list(sizes), 2)
        else:
            prefix, i4, i2, i1, noisy = torch.arange(1 + sum(sizes) + s.window).split([1, *sizes, s.window])
            h4, h2, h1 = self.latents[:, :, -sum(sizes):].split(list(sizes), 2)
        return PackedHistory(noisy, torch.cat([self.start, h1], 2), torch.cat([prefix, i1]), h2, i2, h4, i4)

    def add(self, k: int, latents: torch.Tensor) -> torch.Tensor:
        """Record section k's latents; returns the latents to decode for it (with its neighbour's)."""
        last = k == section_count(self.s) - 1
        if self.s.order == "inverted":
            if last:
                latents = torch.cat([self.start, latents], 2)
            self.latents = torch.cat([latents, self.latents], 2)[:, :, :self.keep]
            span = 2 * self.s.window + (1 if last else 0)
        else:
            self.latents = torch.cat([self.latents, latents], 2)[:, :, -self.keep:]
            span = 2 * self.s.window
        first = self.generated == 0 or (self.s.order == "forward" and k == 0)
        self.generated += latents.shape[2]
        span = self.generated if first else span
        return self.latents[:, :, :span] if self.s.order == "inverted" else self.latents[:, :, -span:]


class FramePackDenoiser(Denoiser):
    """One section's DiT calls: the prompt (and true CFG's negative), embedded guidance, the start image's
    SigLIP states and the section's packed history."""

    def __init__(self, dit, positive, negative, image_embeds: torch.Tensor, settings: LongVideoSettings):
        self.dit, self.cfg = dit, settings.cfg
        self.pos = read_conditioning(positive, "positive")
        self.neg = read_conditioning(negative, "negative") if (negative is not None and settings.cfg > 1.0) else None
        if settings.cfg > 1.0 and self.neg is None:
            raise InputError("a negative CONDITIONING when cfg > 1", "none", "connect a negative prompt or set cfg to 1")
        self.image_embeds, self.history = image_embeds, None
        self.guidance = torch.full((1,), settings.embedded_guidance * 1000.0)
        text = max(self.pos.states.shape[1], self.neg.states.shape[1] if self.neg is not None else 0)
        self.text_tokens = text + image_embeds.shape[1]
        self.passes = 1 + (self.neg is not None)

    def model_shape(self, x_shape: tuple) -> tuple:
        """As many latent frames as the section's tokens with its packed history fill."""
        b, c, t, h, w = x_shape
        per_frame = (h // 2) * (w // 2)
        extra = sum(math.prod(-(-n // k) for n, k in zip((p.shape[2], h, w), kernel))
                    for p, kernel in ((self.history.clean, (1, 2, 2)), (self.history.history_2x, (2, 4, 4)),
                                      (self.history.history_4x, (4, 8, 8))))
        return (b, c, t + -(-extra // per_frame), h, w)

    def _run(self, cond, key: str, x: torch.Tensor, t: torch.Tensor, cache) -> torch.Tensor:
        if cache is not None:
            cache.begin_pass(key)
        return self.dit(x, t.expand(1), cond.states, cond.mask, cond.pooled, self.guidance, history=self.history,
                        image_embeds=self.image_embeds).float().cpu()

    def velocity(self, x: torch.Tensor, t: torch.Tensor, cache) -> torch.Tensor:
        v = self._run(self.pos, "positive", x, t, cache)
        if self.neg is not None:
            v = cfg_combine(v, self._run(self.neg, "negative", x, t, cache), self.cfg)
        return v


def sample_sections(dit, positive, negative, start_latent: torch.Tensor, image_embeds: torch.Tensor,
                    settings: LongVideoSettings, run: Callable) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield (section, raw latents to decode for it) one section at a time. `start_latent`: the start image's
    raw VAE latent [1, 16, 1, H, W]; `run(denoiser, x, sigmas)`: one streamed Euler run (pipeline.run_denoiser
    with the caller's hooks)."""
    if start_latent.dim() != 5 or tuple(start_latent.shape[:3]) != (1, 16, 1):
        raise InputError("the start image's latent [1, 16, 1, H/8, W/8]", f"shape {list(start_latent.shape)}",
                         "encode one image with the HunyuanVideo VAE")
    if image_embeds.dim() != 3 or image_embeds.shape[-1] != dit.model.cfg.image_proj_dim:
        raise InputError(f"the start image's SigLIP states [1, N, {dit.model.cfg.image_proj_dim}]",
                         f"shape {list(image_embeds.shape)}", "encode the start image with " + VISION_FILE)
    start = start_latent.float().cpu() * SCALING_FACTOR
    history = SectionHistory(settings, start)
    denoiser = FramePackDenoiser(dit, positive, negative, image_embeds, settings)
    generator = torch.Generator("cpu").manual_seed(settings.seed)
    _, c, _, h, w = start.shape
    sigmas = section_sigmas(settings.steps, settings.window * h * w / 4)
    for k in range(section_count(settings)):
        denoiser.history = history.packed(k)
        noise = torch.randn((1, c, settings.window, h, w), generator=generator, dtype=torch.float32)
        latents = run(denoiser, noise, sigmas)
        yield k, history.add(k, latents) / SCALING_FACTOR


class FramePackSections(SectionSampler):
    """The family's SectionSampler for FramePack and FramePack-F1 DiTs (families/base.py: section_sampler)."""

    fps = FPS
    defaults = LongVideoSettings(frames=5 * FPS)

    def sections(self, settings: LongVideoSettings) -> int:
        return section_count(settings)

    def overlap_frames(self, settings: LongVideoSettings) -> int:
        return window_frames(settings)  # a section is decoded with its neighbour: they share that many frames

    def backwards(self, settings: LongVideoSettings) -> bool:
        return settings.order == "inverted"

    def image_states(self, vision_path, image, width, height, device):
        from ...loaders.siglip_loader import encode_start_image

        return encode_start_image(vision_path, image, width, height, device)

    def sample(self, dit, positive, negative, start_latent, image_states, settings, run):
        return sample_sections(dit, positive, negative, start_latent, image_states, settings, run)


VISION_FILE = "SigLIP (sigclip_vision_patch14_384.safetensors in models/clip_vision)"
SECTIONS = FramePackSections()
