"""The flow-matching Euler sampler: pure functions over a velocity model `v(x, t)`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .schedule import timesteps


def noise(shape, seed: int) -> torch.Tensor:
    """The initial noise every implementation draws for this seed: float32 from a CPU generator."""
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed), dtype=torch.float32)


def noised(x0: torch.Tensor, eps: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """A clean sample moved to noise level σ along the flow: σ·ε + (1−σ)·x0."""
    return sigma * eps + (1.0 - sigma) * x0


def cfg_combine(positive: torch.Tensor, negative: torch.Tensor, scale: float) -> torch.Tensor:
    return negative + scale * (positive - negative)


@dataclass
class Step:
    index: int  # 0-based step within this run
    total: int
    sigma: float
    x0: torch.Tensor  # the current estimate of the clean latents (model space), for previews


def euler(velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor, sigmas: torch.Tensor,
          callback: Callable[[Step], None] | None = None) -> torch.Tensor:
    """Integrate dx/dσ = v from sigmas[0] down to sigmas[-1]; x is float32 and stays float32."""
    ts = timesteps(sigmas)
    total = len(sigmas) - 1
    for i in range(total):
        v = velocity(x, ts[i]).float()
        if callback is not None:
            callback(Step(i, total, float(sigmas[i]), x - sigmas[i] * v))
        x = x + (sigmas[i + 1] - sigmas[i]) * v
    return x
