"""One sampling run's view of a family's DiT: what the Euler loop asks at each step.

A family builds one from the run's CONDITIONING, LATENT and settings (families/<name>/sampler.py): it reads
the conditioning in the family's format, applies a start image the way the family's DiT takes it, and makes
the step's DiT calls (one, or two with true CFG), each a pass of the step cache."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch


class Denoiser(ABC):
    text_tokens: int  # the most text tokens a DiT call sees (for the activation estimate)
    passes: int  # DiT calls per step (2 with true CFG)

    def schedule(self, sigmas: torch.Tensor) -> None:
        """The run's sigmas (the last one 0), before the first step: for a DiT that also sees the next step's
        timestep (a MeanFlow-distilled model)."""

    def model_shape(self, x_shape: tuple) -> tuple:
        """The latent shape the DiT's activations are planned for: x's, or for a DiT that also takes other
        latent tokens (a long video's packed history), a shape with as many tokens."""
        return x_shape

    def initial(self, x: torch.Tensor, from_noise: bool) -> torch.Tensor:
        """The sampler's starting latents (model space) from the noised ones (a start image may enter here)."""
        return x

    @abstractmethod
    def velocity(self, x: torch.Tensor, t: torch.Tensor, cache) -> torch.Tensor:
        """The flow velocity at latents `x` (model space, float32, CPU) and timestep `t` (0…1000): the step's
        DiT calls, each opening its pass of `cache` (the run's step cache, or None). Float32, CPU."""
