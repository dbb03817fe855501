"""Step caching: when consecutive sampling steps barely change what the transformer blocks see, reuse the
residual the blocks added last time instead of running them — and, for a streamed model, instead of
copying their weights to the device at all.

One policy object per sampling run, consulted by the DiT (models/dit.py) at two points of its forward:
`before_blocks` (TeaCache and MagCache decide there, before any block runs) and `after_first_block`
(First-Block Cache decides there, after the first double block). The DiT hands it image-stream tensors
only; the text stream is not needed after the blocks (the final layer reads the image tokens), so a
skipped step needs the image residual only. With true CFG the positive and negative passes keep separate
states (`begin_pass(key)`). The policy knows nothing of streaming: the sampler wires `on_decided` /
`on_skip_rest` to the streamer so that a skipped step moves no weights.

Methods (each with a threshold, start / end fractions of the steps outside which nothing is skipped —
the first and last steps are always computed — and a maximum run of consecutive skips, 0 = no limit):
- TeaCache (Liu et al. 2024, ali-vilab/TeaCache, TeaCache4HunyuanVideo): the relative L1 change of the
  first double block's modulated image input, rescaled by the published HunyuanVideo polynomial, is
  accumulated; while the sum stays below the threshold the step reuses the cached residual.
- First-Block Cache (ParaAttention; diffusers `apply_first_block_cache`): run the first double block;
  if the mean absolute change of its residual relative to the last computed step's is at most the
  threshold, skip the rest and add the cached residual of the remaining blocks.
- MagCache (Ma et al. 2025, diffusers `apply_mag_cache`): the product of the per-step magnitude ratios
  of the residual since the last computed step gives an error estimate, accumulated; below the threshold
  (and within the skip limit) the step reuses the residual. HunyuanVideo's ratios as MagCache publishes
  them (720p and 544p, 50 steps), interpolated to the run's steps (so no calibration run is needed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

METHODS = ("off", "teacache", "first_block", "mag_cache")

# TeaCache4HunyuanVideo's rescaling polynomial (numpy.poly1d order: highest power first)
TEACACHE_HUNYUAN_COEFFICIENTS = (7.33226126e+02, -4.01131952e+02, 6.75869174e+01, -3.14987800e+00, 9.61237896e-02)
# MagCache4HunyuanVideo's published magnitude ratios, 50 steps (index 0 is the first step's 1.0)
MAG_RATIOS_720P = (1.0, 1.0754, 1.27807, 1.11596, 1.09504, 1.05188, 1.00844, 1.05779, 1.00657, 1.04142, 1.03101,
                   1.00679, 1.02556, 1.00908, 1.06949, 1.05438, 1.02214, 1.02321, 1.03019, 1.00779, 1.03381, 1.01886,
                   1.01161, 1.02968, 1.00544, 1.02822, 1.00689, 1.02119, 1.0105, 1.01044, 1.01572, 1.02972, 1.0094,
                   1.02368, 1.0226, 0.98965, 1.01588, 1.02146, 1.0018, 1.01687, 0.99436, 1.00283, 1.01139, 0.97122,
                   0.98251, 0.94513, 0.97656, 0.90943, 0.85703, 0.75456)
MAG_RATIOS_544P = (1.0, 1.06971, 1.29073, 1.11245, 1.09596, 1.05233, 1.01415, 1.05672, 1.00848, 1.03632, 1.02974,
                   1.00984, 1.03028, 1.00681, 1.06614, 1.05022, 1.02592, 1.01776, 1.02985, 1.00726, 1.03727, 1.01502,
                   1.00992, 1.03371, 0.9976, 1.02742, 1.0093, 1.01869, 1.00815, 1.01461, 1.01152, 1.03082, 1.0061,
                   1.02162, 1.01999, 0.99063, 1.01186, 1.0217, 0.99947, 1.01711, 0.9904, 1.00258, 1.00878, 0.97039,
                   0.97686, 0.94315, 0.97728, 0.91154, 0.86139, 0.76592)


def published_mag_ratios(height: int) -> tuple[float, ...]:
    """MagCache's HunyuanVideo calibration closest to the video height (published for 720p and 544p)."""
    return MAG_RATIOS_720P if height >= 632 else MAG_RATIOS_544P


def nearest_interp(values, length: int) -> list[float]:
    """A per-step curve resampled to `length` steps by nearest neighbour (as MagCache and diffusers do)."""
    values = list(values)
    if length == 1:
        return values[-1:]
    scale = (len(values) - 1) / (length - 1)
    return [values[int(round(i * scale))] for i in range(length)]


@dataclass(frozen=True)
class StepCacheSettings:
    method: str = "off"
    threshold: float = 0.0  # 0 = never skip (output bit-identical to no cache)
    start: float = 0.0  # fraction of the steps always computed first (MagCache's retention ratio)
    end: float = 1.0  # steps from end × steps on are always computed
    max_skips: int = 0  # most consecutive skipped steps per pass; 0 = no limit
    mag_ratios: tuple[float, ...] | None = None  # MagCache; None = the published ones for the video height

    @property
    def active(self) -> bool:
        return self.method != "off" and self.threshold > 0


@dataclass
class PassState:
    """What one pass (the positive or the negative prompt) remembers between steps."""
    step: int = 0
    skips_in_a_row: int = 0
    residual: torch.Tensor | None = None  # image output − image input of the blocks, last computed step
    previous: torch.Tensor | None = None  # TeaCache: modulated input; FBC: first block's residual
    head_output: torch.Tensor | None = None  # FBC: the first block's image output on the last computed step
    accumulated: float = 0.0  # TeaCache distance / MagCache error
    accumulated_ratio: float = 1.0  # MagCache
    accumulated_steps: int = 0  # MagCache
    decisions: list[bool] = field(default_factory=list)  # True = computed


class StepCache:
    """The policy for one sampling run of `steps` steps (see the module docstring)."""

    def __init__(self, settings: StepCacheSettings, steps: int, height: int = 720):
        if settings.method not in METHODS:
            raise ValueError(f"step cache method {settings.method!r} is not one of {METHODS}")
        self.settings = settings
        self.steps = steps
        ratios = settings.mag_ratios or published_mag_ratios(height)
        self.mag_ratios = nearest_interp(ratios, steps) if settings.method == "mag_cache" else []
        self.passes: dict[str, PassState] = {}
        self.state: PassState | None = None
        # the sampler's hooks into the streamer: a pass decided to compute / to skip after the first block
        self.on_decided: Callable[[], None] | None = None
        self.on_skip_rest: Callable[[], None] | None = None

    # -- run bookkeeping -----------------------------------------------------------------------------
    @property
    def pauses_after_first_block(self) -> bool:
        """First-Block Cache decides after the first double block: the streamer must not copy further."""
        return self.settings.method == "first_block" and self.settings.active

    @property
    def needs_probe(self) -> bool:
        return self.settings.method == "teacache" and self.settings.active

    def device_bytes(self, image_tokens: int, hidden: int, itemsize: int, passes: int) -> int:
        """What the policy keeps on the device: per pass the cached residual and the previous value it
        compares with, plus the clones of the image stream a forward makes (the blocks update it in place)."""
        if not self.settings.active:
            return 0
        stream = image_tokens * hidden * itemsize
        kept = 2 if self.settings.method in ("teacache", "first_block") else 1
        transient = 2 if self.settings.method == "first_block" else 1
        return stream * (kept * passes + transient)

    def begin_pass(self, key: str) -> None:
        self.state = self.passes.setdefault(key, PassState())

    def _end_step(self, computed: bool) -> None:
        st = self.state
        st.decisions.append(computed)
        st.skips_in_a_row = 0 if computed else st.skips_in_a_row + 1
        st.step += 1

    def _eligible(self) -> bool:
        """May this step be skipped at all (start/end window, first/last step, run of skips)?"""
        s, st = self.settings, self.state
        i = st.step
        first = int(s.start * self.steps + 0.5)
        last = math.ceil(s.end * self.steps)
        if not s.active or i == 0 or i == self.steps - 1 or i < first or i >= last:
            return False
        return not (s.max_skips and st.skips_in_a_row >= s.max_skips)

    # -- the DiT's two consultation points ----------------------------------------------------------
    def before_blocks(self, img: torch.Tensor, probe: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """Called with the image tokens entering the blocks. Returns the step's output image tokens when
        the step is skipped (input + cached residual), else None (run the blocks)."""
        method = self.settings.method
        if method == "teacache" and self.settings.active:
            skip = self._teacache(probe())
        elif method == "mag_cache" and self.settings.active:
            skip = self._mag_cache()
        else:
            return None
        if not skip:
            if self.on_decided is not None:
                self.on_decided()
            return None
        self._end_step(False)
        return img + self.state.residual

    def after_first_block(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor | None:
        """First-Block Cache, with the first double block's image tokens before and after it. Returns the
        step's output image tokens when the rest is skipped, else None."""
        if not self.pauses_after_first_block:
            return None
        st = self.state
        residual = after - before
        if st.previous is None or not self._eligible():
            skip = False
        else:
            diff = (residual - st.previous).abs().mean() / st.previous.abs().mean()
            skip = bool(diff.item() <= self.settings.threshold)
        if skip and st.residual is not None:
            self._end_step(False)
            if self.on_skip_rest is not None:
                self.on_skip_rest()
            return after + st.residual
        st.previous, st.head_output = residual, after.clone()
        if self.on_decided is not None:
            self.on_decided()
        return None

    def after_blocks(self, img_in: torch.Tensor | None, img_out: torch.Tensor) -> None:
        """Called with the image tokens after the last block of a computed step: keep the residual.
        (First-Block Cache keeps the residual of the blocks after the first one.)"""
        st = self.state
        if self.settings.method == "first_block":
            residual = img_out - st.head_output if st.head_output is not None else None
            st.head_output = None
        else:
            residual = img_out - img_in
        st.residual = residual
        self._end_step(True)

    # -- the criteria ------------------------------------------------------------------------------
    def _teacache(self, modulated: torch.Tensor) -> bool:
        st = self.state
        previous, st.previous = st.previous, modulated
        if not self._eligible() or previous is None or st.residual is None:
            st.accumulated = 0.0
            return False
        rel = ((modulated - previous).abs().mean() / previous.abs().mean()).item()
        st.accumulated += teacache_rescale(rel)
        if st.accumulated < self.settings.threshold:
            return True
        st.accumulated = 0.0
        return False

    def _mag_cache(self) -> bool:
        st, s = self.state, self.settings
        i = st.step
        if i < int(s.start * self.steps + 0.5):
            return False
        st.accumulated_ratio *= self.mag_ratios[i] if i < len(self.mag_ratios) else 1.0
        st.accumulated_steps += 1
        st.accumulated += abs(1.0 - st.accumulated_ratio)
        limit = s.max_skips or self.steps
        if (self._eligible() and st.residual is not None and st.accumulated <= s.threshold
                and st.accumulated_steps <= limit):
            return True
        st.accumulated_ratio, st.accumulated_steps, st.accumulated = 1.0, 0, 0.0
        return False

    # -- what happened ---------------------------------------------------------------------------------
    def summary(self) -> dict:
        decisions = {k: p.decisions for k, p in self.passes.items()}
        skipped = sum(d.count(False) for d in decisions.values())
        total = sum(len(d) for d in decisions.values())
        return {"method": self.settings.method, "threshold": self.settings.threshold, "passes": total,
                "skipped": skipped, "decisions": decisions}


def teacache_rescale(x: float) -> float:
    value = 0.0
    for c in TEACACHE_HUNYUAN_COEFFICIENTS:
        value = value * x + c
    return value


def report_line(report: dict | None) -> str:
    """'; step cache teacache (threshold 0.15): 9 of 30 passes skipped, 6.10 GiB not streamed' ('' when off)."""
    if not report or report.get("method") == "off":
        return ""
    return (f"; step cache {report['method']} (threshold {report['threshold']:g}): {report['skipped']} of "
            f"{report['passes']} passes skipped, {report.get('bytes_not_streamed', 0) / 1024 ** 3:.2f} GiB not streamed")
