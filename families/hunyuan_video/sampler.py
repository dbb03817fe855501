"""What a HunyuanVideo 1.0 sampling run asks its DiT at each step: the text states and CLIP-L pooled vector,
embedded guidance (×1000), optional true CFG with a negative prompt, and a start image used as the DiT's
weights say (image_condition.py: latent concat, SkyReels concat, token replace)."""

from __future__ import annotations

import logging

import torch

from ...errors import InputError
from ...sampling.denoiser import Denoiser
from ...sampling.euler import cfg_combine
from . import image_condition as i2v
from .conditioning import Cond, read_conditioning
from .vae import SCALING_FACTOR

log = logging.getLogger("hystream")


class HunyuanDenoiser(Denoiser):
    def __init__(self, dit, positive, negative, latent: torch.Tensor, settings):
        self.dit = dit
        self.pos = read_conditioning(positive, "positive")
        self.neg = read_conditioning(negative, "negative") if (negative is not None and settings.cfg > 1.0) else None
        if settings.cfg > 1.0 and self.neg is None:
            raise InputError("a negative CONDITIONING when cfg > 1", "none", "connect a negative prompt or set cfg to 1")
        self.cfg = settings.cfg
        self.batch = batch = latent.shape[0]
        model_cfg = dit.model.cfg
        self.image = i2v.image_condition(model_cfg.image_condition, i2v.start_image_latent(self.pos.extra, latent),
                                         SCALING_FACTOR, batch)
        if self.image is not None and self.image.kind == "token_replace":
            log.info("HyStream: start image on a 16-channel DiT: sampled as HunyuanVideo-I2V token replace (the first "
                     "latent frame is the clean image)")
        self.first_tokens = self.image.first_frame_tokens(model_cfg.patch) if self.image is not None else 0
        i2v.check_prompt_kind(self.image, self.pos.extra.get("hystream_image_interleave"))
        self.guidance = torch.full((batch,), settings.embedded_guidance * 1000.0)
        self.text_tokens = max(self.pos.states.shape[1], self.neg.states.shape[1] if self.neg is not None else 0)
        self.passes = 1 + (self.neg is not None)

    def initial(self, x: torch.Tensor, from_noise: bool) -> torch.Tensor:
        return i2v.initial_latents(self.image, x, from_noise) if self.image is not None else x

    def _run(self, cond: Cond, key: str, xt: torch.Tensor, t: torch.Tensor, cache) -> torch.Tensor:
        batch = self.batch
        states = cond.states.expand(batch, -1, -1)
        mask = cond.mask.expand(batch, -1) if cond.mask is not None else None
        pooled = cond.pooled.expand(batch, -1)
        if cache is not None:
            cache.begin_pass(key)
        if self.image is not None:
            xt = i2v.model_input(self.image, xt)
        return self.dit(xt, t.expand(batch), states, mask, pooled, self.guidance,
                        first_frame_tokens=self.first_tokens).float().cpu()

    def velocity(self, x: torch.Tensor, t: torch.Tensor, cache) -> torch.Tensor:
        v = self._run(self.pos, "positive", x, t, cache)
        if self.neg is not None:
            v = cfg_combine(v, self._run(self.neg, "negative", x, t, cache), self.cfg)
        return i2v.hold_first_frame(self.image, v) if self.image is not None else v
