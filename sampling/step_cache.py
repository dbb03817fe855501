"""Step caching: when consecutive sampling steps barely change what the transformer blocks see, reuse the
residual the blocks added last time instead of running them — and, for a streamed model, instead of
copying their weights to the device at all.

This module is the interface: `StepCache`, one object per sampling run, consulted by the DiT
(models/dit.py) at three points of its forward — `before_blocks` (TeaCache and MagCache decide there,
before any block runs), `after_first_block` (First-Block Cache decides there, after the first double
block) and `after_blocks` (a computed step keeps its residual). The DiT hands it image-stream tensors
only; the text stream is not needed after the blocks (the final layer reads the image tokens), so a
skipped step needs the image residual only. With true CFG the positive and negative passes keep separate
states (`begin_pass(key)`). A cache knows nothing of streaming: the sampler passes the streamer's
`on_decided` / `on_skip_rest` at construction so that a skipped step moves no weights.

The base class keeps what every method shares — the window outside which nothing is skipped (start / end
fractions of the steps; the first and last steps are always computed), the longest run of consecutive
skips (0 = no limit), one state per pass, the decisions. One class per method, each in
sampling/step_caches/ with its own per-pass state; they are chosen by name in one place,
`sampling.step_caches.METHODS` / `make_step_cache` (which returns no cache at all when off). The
constants a method needs (TeaCache's polynomial, MagCache's ratios) are the model family's, handed in as
a `families.base.CacheConstants`; the defaults the node and the CLI show are sampling/step_caches/defaults.py.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import torch

if TYPE_CHECKING:  # annotations only: the constants are plain values the caller hands in
    from ..families.base import CacheConstants


@dataclass(frozen=True)
class StepCacheSettings:
    """What the user chose. The field defaults are the neutral values (no window, no limit), not the
    recommended ones: those are sampling/step_caches/defaults.py."""
    method: str = "off"
    threshold: float = 0.0  # 0 = never skip (no cache object: output bit-identical to no cache)
    start: float = 0.0  # fraction of the steps always computed first (MagCache's retention ratio)
    end: float = 1.0  # steps from end × steps on are always computed
    max_skips: int = 0  # most consecutive skipped steps per pass; 0 = no limit
    mag_ratios: tuple[float, ...] | None = None  # MagCache; None = the family's published ones for the height

    @property
    def active(self) -> bool:
        return self.method != "off" and self.threshold > 0


@dataclass
class PassState:
    """What one pass (the positive or the negative prompt) remembers between steps; each method's state
    class adds its own fields."""
    step: int = 0
    skips_in_a_row: int = 0
    residual: torch.Tensor | None = None  # what the (skippable) blocks added on the last computed step
    decisions: list[bool] = field(default_factory=list)  # True = computed


class StepCache(ABC):
    """The policy for one sampling run of `steps` steps (see the module docstring)."""

    State: ClassVar[type[PassState]] = PassState  # the method's per-pass state
    pauses_after_first_block: ClassVar[bool] = False  # decides after the first double block: the streamer pauses there
    needs_probe: ClassVar[bool] = False  # before_blocks calls `probe()` (the first block's modulated input)
    kept_per_pass: ClassVar[int] = 1  # image-stream-sized tensors kept per pass between steps
    transient: ClassVar[int] = 1  # image-stream clones a forward makes (the blocks update the stream in place)

    def __init__(self, settings: StepCacheSettings, steps: int, constants: CacheConstants, height: int, *,
                 on_decided: Callable[[], None] | None = None, on_skip_rest: Callable[[], None] | None = None,
                 agree: Callable[[bool], bool] | None = None):
        """`constants`: the family's calibrations (a method that needs one it lacks raises InputError);
        `height`: the video's, in pixels (MagCache picks its calibration by it); `agree`: with ranks sharing
        the forward, rank 0's skip decision for every rank (all skip the same steps and the same transfers)."""
        if not settings.active:
            raise ValueError(f"{settings} skips nothing: no cache object is made for it (make_step_cache returns None)")
        self.settings = settings
        self.steps = steps
        self.on_decided = on_decided  # the pass decided to compute (after a pause)
        self.on_skip_rest = on_skip_rest  # the pass skips its remaining blocks (after a pause)
        self.agree = agree
        self.passes: dict[str, PassState] = {}
        self.state: PassState | None = None

    # -- the sampler's points ------------------------------------------------------------------------
    def begin_pass(self, key: str) -> None:
        self.state = self.passes.setdefault(key, self.State())

    def device_bytes(self, image_tokens: int, hidden: int, itemsize: int, passes: int) -> int:
        """What the cache keeps on the device: per pass what it carries between steps, plus the clones of
        the image stream a forward makes."""
        return image_tokens * hidden * itemsize * (self.kept_per_pass * passes + self.transient)

    def summary(self) -> dict:
        decisions = {k: p.decisions for k, p in self.passes.items()}
        skipped = sum(d.count(False) for d in decisions.values())
        total = sum(len(d) for d in decisions.values())
        return {"method": self.settings.method, "threshold": self.settings.threshold, "passes": total,
                "skipped": skipped, "decisions": decisions}

    # -- the DiT's points --------------------------------------------------------------------------------
    @abstractmethod
    def before_blocks(self, img: torch.Tensor, probe: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """With the image tokens entering the blocks: the step's output image tokens when the step is
        skipped, else None (run the blocks)."""

    @abstractmethod
    def after_first_block(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor | None:
        """Only when `pauses_after_first_block`: with the first double block's image tokens before and
        after it, the step's output image tokens when the rest is skipped, else None."""

    @abstractmethod
    def after_blocks(self, img_in: torch.Tensor | None, img_out: torch.Tensor) -> None:
        """With the image tokens after the last block of a computed step (and those before the blocks,
        None when `pauses_after_first_block`): keep the residual."""

    # -- shared bookkeeping --------------------------------------------------------------------------
    def eligible(self) -> bool:
        """May this pass's current step be skipped at all (start/end window, first/last step, run of skips)?"""
        s, i = self.settings, self.state.step
        first, last = int(s.start * self.steps + 0.5), math.ceil(s.end * self.steps)
        if i == 0 or i == self.steps - 1 or i < first or i >= last:
            return False
        return not (s.max_skips and self.state.skips_in_a_row >= s.max_skips)

    def decided(self, skip: bool) -> bool:
        """The skip decision every rank follows (this one's when alone)."""
        return self.agree(skip) if self.agree is not None else skip

    def end_step(self, computed: bool) -> None:
        st = self.state
        st.decisions.append(computed)
        st.skips_in_a_row = 0 if computed else st.skips_in_a_row + 1
        st.step += 1

    def skipped(self, img: torch.Tensor) -> torch.Tensor:
        """The step is skipped: `img` (what the skipped blocks would have read) plus the cached residual."""
        self.end_step(False)
        return img + self.state.residual

    def computed(self, residual: torch.Tensor | None) -> None:
        """The step was computed: keep what its (skippable) blocks added."""
        self.state.residual = residual
        self.end_step(True)


def report_line(report: dict | None) -> str:
    """'; step cache teacache (threshold 0.15): 9 of 30 passes skipped, 6.10 GiB not streamed' ('' when off)."""
    if not report or report.get("method") == "off":
        return ""
    return (f"; step cache {report['method']} (threshold {report['threshold']:g}): {report['skipped']} of "
            f"{report['passes']} passes skipped, {report.get('bytes_not_streamed', 0) / 1024 ** 3:.2f} GiB not streamed")
