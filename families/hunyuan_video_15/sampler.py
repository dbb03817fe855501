"""What a HunyuanVideo 1.5 sampling run asks its DiT at each step: the prompt's Qwen2.5-VL states and its
glyph text's ByT5 states, true CFG with a negative prompt (no embedded guidance: the distilled models just
run at cfg 1), the DiT's 65 input channels (noisy latents | the start image's latent on frame 0 | a mask 1 on
that frame; zeros for text-to-video), the start image's SigLIP states, and the step-distilled (MeanFlow)
model's second timestep: the next step's, 0 at the last.

The start image arrives as ComfyUI's HunyuanVideo15ImageToVideo attaches it (`concat_latent_image`,
`concat_mask` 0 on the image's frames, `clip_vision_output` with the SigLIP states), so native and HyStream
nodes mix."""

from __future__ import annotations

import logging

import torch

from ...errors import InputError
from ...sampling.denoiser import Denoiser
from ...sampling.euler import cfg_combine
from ...sampling.schedule import timesteps as schedule_timesteps
from .conditioning import read_conditioning

log = logging.getLogger("hystream")
FIX = "connect the start image through HyStreamImageToVideo (or ComfyUI's HunyuanVideo15ImageToVideo)"


def image_states(extra: dict) -> torch.Tensor | None:
    """The SigLIP states of the start image (ComfyUI's clip_vision_output, or a plain tensor), or None."""
    out = extra.get("clip_vision_output") if isinstance(extra, dict) else None
    if out is None:
        return None
    states = getattr(out, "last_hidden_state", None)
    if states is None and isinstance(out, dict):
        states = out.get("last_hidden_state")
    if not torch.is_tensor(states) or states.dim() != 3:
        raise InputError("a clip_vision_output with last_hidden_state [1, 729, 1152] (SigLIP)",
                         f"{type(out).__name__}", "encode the start image with sigclip_vision_patch14_384")
    return states.float()


def image_condition(extra: dict, latent: torch.Tensor, scaling: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(the condition latents [B, 32, T, h, w] in model space, the mask channel [B, 1, T, h, w]): the start
    image's latent on its frames and 1 in the mask there; zeros for text-to-video."""
    b, c, t, h, w = latent.shape
    cond, mask = torch.zeros(b, c, t, h, w), torch.zeros(b, 1, t, h, w)
    image = extra.get("concat_latent_image") if isinstance(extra, dict) else None
    if image is None:
        return cond, mask
    if not torch.is_tensor(image) or image.dim() != 5 or image.shape[1] != c or tuple(image.shape[3:]) != (h, w):
        raise InputError(f"a start-image latent [B, {c}, T, {h}, {w}] (the video's size)",
                         f"{getattr(image, 'shape', type(image).__name__)}", FIX)
    frames = min(image.shape[2], t)
    cond[:, :, :frames] = image[:, :, :frames].float() * scaling
    given = extra.get("concat_mask")
    if given is not None:  # 0 where the image is: the DiT's mask channel is its complement
        mask[:] = 1.0 - given.float()[:, :1, :t].reshape(-1, 1, t, h, w)[:1]
    else:
        mask[:, :, :1] = 1.0
    return cond, mask


class Hunyuan15Denoiser(Denoiser):
    def __init__(self, dit, positive, negative, latent: torch.Tensor, settings):
        self.dit = dit
        self.pos = read_conditioning(positive, "positive")
        self.neg = read_conditioning(negative, "negative") if (negative is not None and settings.cfg > 1.0) else None
        if settings.cfg > 1.0 and self.neg is None:
            raise InputError("a negative CONDITIONING when cfg > 1", "none",
                             "connect a negative prompt (HunyuanVideo 1.5's reference encodes an empty one as ' '), "
                             "or set cfg to 1 for the CFG-distilled and step-distilled models")
        self.cfg = settings.cfg
        self.batch = latent.shape[0]
        scaling = dit.family.latent.scaling
        self.cond, self.mask = image_condition(self.pos.extra, latent, scaling)
        self.image = image_states(self.pos.extra)
        if self.image is not None:
            self.image = self.image.expand(self.batch, -1, -1)
        elif self.mask.any():
            log.warning("HyStream: a start image without its SigLIP states: the DiT sees the image latent only "
                        "(connect clip_vision_output, or give HyStreamImageToVideo the SigLIP file)")
        self.meanflow = bool(dit.model.cfg.meanflow)
        self.steps: list[float] = []  # the run's timesteps (MeanFlow takes the next one too)
        lengths = [c.states.shape[1] + (c.glyph.shape[1] if c.glyph is not None else 0) for c in (self.pos, self.neg) if c]
        self.text_tokens = max(lengths) + (self.image.shape[1] if self.image is not None else 0)
        self.passes = 1 + (self.neg is not None)

    def schedule(self, sigmas: torch.Tensor) -> None:
        self.steps = [float(t) for t in schedule_timesteps(sigmas)]

    def _next_timestep(self, t: torch.Tensor) -> torch.Tensor:
        """MeanFlow's timestep_r: the next step's timestep (0 after the last), as the reference passes it."""
        if not self.steps:
            raise RuntimeError("the sampler must give the denoiser its schedule first (Denoiser.schedule)")
        i = min(range(len(self.steps) - 1), key=lambda k: abs(self.steps[k] - float(t)))
        return torch.full((self.batch,), self.steps[i + 1])  # the schedule ends in 0: the last step's r

    def _run(self, cond, key: str, x: torch.Tensor, t: torch.Tensor, cache) -> torch.Tensor:
        b = self.batch
        if cache is not None:
            cache.begin_pass(key)
        inputs = torch.cat((x, self.cond, self.mask), 1)
        glyph = cond.glyph.expand(b, -1, -1) if cond.glyph is not None else None
        glyph_mask = cond.glyph_mask.expand(b, -1) if cond.glyph_mask is not None else None
        return self.dit(inputs, t.expand(b), cond.states.expand(b, -1, -1),
                        cond.mask.expand(b, -1) if cond.mask is not None else None, glyph, glyph_mask, self.image,
                        self._next_timestep(t) if self.meanflow else None).float().cpu()

    def velocity(self, x: torch.Tensor, t: torch.Tensor, cache) -> torch.Tensor:
        v = self._run(self.pos, "positive", x, t, cache)
        if self.neg is not None:
            v = cfg_combine(v, self._run(self.neg, "negative", x, t, cache), self.cfg)
        return v
