"""What a long video sampled section by section is asked for (a DiT trained for it, FramePack, samples it; the
family says how): the settings, and the interface a family's section sampler answers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from ..errors import InputError

ORDERS = ("inverted", "forward")  # sections generated from the end back to the start image, or onward from it


@dataclass(frozen=True)
class LongVideoSettings:
    frames: int  # video frames asked; the result has 4k + 1, the last section may round up
    window: int = 9  # latent frames each section samples
    steps: int = 25
    embedded_guidance: float = 10.0
    cfg: float = 1.0  # true CFG with the negative prompt (1 = off)
    seed: int = 0
    order: str = "inverted"

    def __post_init__(self):
        if self.order not in ORDERS:
            raise InputError(f"a sampling order: {' or '.join(ORDERS)}", repr(self.order),
                             "inverted for FramePack (FramePackI2V_HY), forward for FramePack-F1")
        if self.frames < 1 or self.window < 1 or self.steps < 1:
            raise InputError("frames, window and steps ≥ 1", f"frames {self.frames}, window {self.window}, "
                             f"steps {self.steps}", "FramePack's defaults: window 9, 25 steps")
        if self.cfg < 1.0:
            raise InputError("cfg ≥ 1 (1 = off)", f"{self.cfg}", "use 1.0 (FramePack is guidance-distilled)")


def frames_for_seconds(seconds: float, fps: float) -> int:
    if not seconds > 0:
        raise InputError("a length in seconds above 0", f"{seconds}", "e.g. 5 (seconds at the model's frame rate)")
    return max(1, round(seconds * fps))


class SectionSampler:
    """A family's answer for a DiT that samples long videos: its frame rate and default settings, the sections
    a length takes, how decoded sections overlap and in which order they come, the start image's states, and
    the sections themselves (raw latents to decode, one section at a time)."""

    fps: float
    defaults: LongVideoSettings

    def sections(self, settings: LongVideoSettings) -> int:
        raise NotImplementedError

    def overlap_frames(self, settings: LongVideoSettings) -> int:
        raise NotImplementedError

    def backwards(self, settings: LongVideoSettings) -> bool:
        """Whether each section comes before the previous one in the video."""
        raise NotImplementedError

    def image_states(self, vision_path: str, image: torch.Tensor, width: int, height: int, device) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, dit, positive, negative, start_latent: torch.Tensor, image_states: torch.Tensor,
               settings: LongVideoSettings, run: Callable) -> Iterator[tuple[int, torch.Tensor]]:
        raise NotImplementedError
