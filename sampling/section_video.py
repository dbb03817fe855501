"""A long video assembled from decoded sections, in bounded memory.

Neighbouring sections are decoded with an overlap and cross-faded over it, linearly, as FramePack's reference
appends them (diffusers' `_soft_append`: weights 1 → 0 across the overlap). Frames that no later section can
change go to the sink at once, in display order. A video generated forward (FramePack-F1) is written as it
grows; one generated backwards (FramePack's anti-drifting order: each section comes before the last) is spilled
to disk a section at a time and handed to the sink in display order at the end. Either way the memory held is
one section's frames; the result keeps 4k + 1 frames, as the reference's does."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable

import torch

HOLD = 3  # frames held back beyond the overlap: the final 4k + 1 cut removes at most 3


def cross_fade(first: torch.Tensor, then: torch.Tensor) -> torch.Tensor:
    """`first` fading out into `then` over their frames ([F, H, W, 3] each, equal F)."""
    weights = torch.linspace(1, 0, first.shape[0], dtype=first.dtype)[:, None, None, None]
    return weights * first + (1 - weights) * then


class SectionVideo:
    """add(frames) for each decoded section ([F, H, W, 3], unclamped); finish() flushes the rest. `sink`
    receives clamped frames in display order; `backwards`: each section precedes the previous one."""

    def __init__(self, overlap: int, sink: Callable[[torch.Tensor], None], backwards: bool = False,
                 spill_dir: str | None = None, spill_as: torch.dtype = torch.float16):
        """spill_as: how a backwards video's final frames wait on disk — float16 (within 2.5e-4 of the frames),
        or uint8 (8-bit levels: exactly what an mp4 writer makes of them, a quarter of float32's disk)."""
        self.overlap, self.sink, self.backwards, self.spill_as = max(0, int(overlap)), sink, backwards, spill_as
        self.pending: torch.Tensor | None = None  # frames a later section may still change (its edge)
        self.frames = 0  # frames final so far (emitted or spilled)
        self._spill = tempfile.mkdtemp(prefix="hystream-sections-", dir=spill_dir) if backwards else None
        self._spilled: list[str] = []

    def add(self, frames: torch.Tensor) -> None:
        frames = frames.float()
        if self.pending is None:
            merged = frames
        elif self.backwards:  # this section's end fades into the video's start
            n = min(self.overlap, frames.shape[0], self.pending.shape[0])
            merged = torch.cat([frames[:frames.shape[0] - n], cross_fade(frames[frames.shape[0] - n:], self.pending[:n]),
                                self.pending[n:]])
        else:  # the video's end fades into this section's start
            n = min(self.overlap, frames.shape[0], self.pending.shape[0])
            merged = torch.cat([self.pending[:self.pending.shape[0] - n],
                                cross_fade(self.pending[self.pending.shape[0] - n:], frames[:n]), frames[n:]])
        keep = min(merged.shape[0], self.overlap + (0 if self.backwards else HOLD))
        if self.backwards:
            self.pending, final = merged[:keep], merged[keep:]
        else:
            self.pending, final = merged[merged.shape[0] - keep:], merged[:merged.shape[0] - keep]
        if final.shape[0]:
            self._emit(final)

    def _emit(self, final: torch.Tensor) -> None:
        self.frames += final.shape[0]
        if self.backwards:
            path = os.path.join(self._spill, f"{len(self._spilled):05d}.pt")
            final = final.clamp(0, 1)
            torch.save((final * 255).round().to(torch.uint8) if self.spill_as == torch.uint8 else final.to(self.spill_as), path)
            self._spilled.append(path)
        else:
            self.sink(final.clamp(0, 1))

    def _load(self, path: str) -> torch.Tensor:
        part = torch.load(path)
        return part.float() / 255 if part.dtype == torch.uint8 else part.float()

    def total(self) -> int:
        return self.frames + (self.pending.shape[0] if self.pending is not None else 0)

    def finish(self) -> int:
        """Hand out what is left; returns the frames the video has (4k + 1)."""
        total = self.total()
        keep = (total - 1) // 4 * 4 + 1 if total else 0
        try:
            if self.backwards:
                left = keep
                for part in [self.pending, *(self._load(p) for p in reversed(self._spilled))]:
                    if part is None or left <= 0:
                        continue
                    self.sink(part[:left].clamp(0, 1))
                    left -= min(left, part.shape[0])
            elif self.pending is not None:
                self.sink(self.pending[:self.pending.shape[0] - (total - keep)].clamp(0, 1))
        finally:
            self.close()
        return keep

    def close(self) -> None:
        self.pending = None
        if self._spill is not None:
            shutil.rmtree(self._spill, ignore_errors=True)
            self._spill = None
