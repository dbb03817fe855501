"""Flow-matching timesteps as HunyuanVideo samples them.

σ runs linearly from 1 to 0 over `steps`, then is shifted toward high noise, σ' = s·σ / (1 + (s−1)·σ)
(`flow_shift`, 7 for HunyuanVideo), and the DiT sees t = 1000·σ'. Computed in float32 exactly as
diffusers' FlowMatchEulerDiscreteScheduler does, so a diffusers run and a HyStream run with the same
seed walk the same sigmas bit for bit.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError


def shifted_sigmas(steps: int, shift: float) -> torch.Tensor:
    """[steps + 1] float32: the shifted sigmas of every step, then the terminal 0."""
    if steps < 1:
        raise InputError("at least 1 sampling step", f"steps={steps}", "use 20-50 steps (30 is the default)")
    if shift <= 0:
        raise InputError("a positive flow_shift", f"{shift}", "use 7.0 (HunyuanVideo's default) or 5-17")
    sigmas = np.linspace(1.0, 0.0, steps + 1)[:-1].astype(np.float32)
    sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
    return torch.cat([torch.from_numpy(sigmas).to(torch.float32), torch.zeros(1)])


def start_index(steps: int, denoise: float) -> int:
    """Video-to-video: skip the first steps so that round(steps × denoise) steps remain (denoise 1 runs
    them all; 0 runs none and returns the input)."""
    if not 0.0 <= denoise <= 1.0:
        raise InputError("denoise between 0 and 1", f"{denoise}", "1.0 for text-to-video, 0.4-0.8 for video-to-video")
    return steps - round(steps * denoise)


def timesteps(sigmas: torch.Tensor) -> torch.Tensor:
    """The DiT's timestep for each sigma (0..1000 units), float32."""
    return sigmas * 1000.0
