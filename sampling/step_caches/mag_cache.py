"""MagCache (Ma et al. 2025; diffusers `apply_mag_cache`): the product of the per-step magnitude ratios of
the residual since the last computed step gives an error estimate, accumulated; below the threshold (and
within the skip limit) the step reuses the residual of all the blocks. The ratios are the family's
published calibration closest to the video height (MagCache4HunyuanVideo: 720p and 544p, 50 steps),
resampled to the run's steps, so no calibration run is needed; the settings may give others. The
decision is made before any block runs: a skipped step moves no weights."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ...errors import InputError
from ..step_cache import PassState, StepCache


@dataclass
class MagCacheState(PassState):
    accumulated: float = 0.0  # the error estimate since the last computed step
    accumulated_ratio: float = 1.0  # the product of the ratios since then


def nearest_interp(values, length: int) -> list[float]:
    """A per-step curve resampled to `length` steps by nearest neighbour (as MagCache and diffusers do)."""
    values = list(values)
    if length == 1:
        return values[-1:]
    scale = (len(values) - 1) / (length - 1)
    return [values[round(i * scale)] for i in range(length)]


class MagCache(StepCache):
    State = MagCacheState
    kept_per_pass = 1  # the residual

    def __init__(self, settings, steps, constants, height, **hooks):
        super().__init__(settings, steps, constants, height, **hooks)
        ratios = settings.mag_ratios or constants.mag_ratios_for(height)
        if not ratios:
            raise InputError(f"MagCache's magnitude ratios published for {constants.family}", "none published",
                             "use first_block (it needs no calibration)"
                             + (" or teacache" if constants.teacache_coefficients else ""), where="the step cache")
        self.ratios = nearest_interp(ratios, steps)

    def before_blocks(self, img: torch.Tensor, probe: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        return self.skipped(img) if self.decided(self._skip()) else None

    def _skip(self) -> bool:
        st, i = self.state, self.state.step
        st.accumulated_ratio *= self.ratios[i] if i < len(self.ratios) else 1.0
        st.accumulated += abs(1.0 - st.accumulated_ratio)
        # diffusers' retention ratio and `accumulated_steps <= max_skip_steps` are the base's window and run of
        # skips (`eligible`): the steps since the last computed one are always the skips in a row + 1
        if self.eligible() and st.residual is not None and st.accumulated <= self.settings.threshold:
            return True
        st.accumulated_ratio, st.accumulated = 1.0, 0.0
        return False

    def after_first_block(self, before: torch.Tensor, after: torch.Tensor) -> None:
        return None  # decided before the blocks

    def after_blocks(self, img_in: torch.Tensor | None, img_out: torch.Tensor) -> None:
        self.computed(img_out - img_in)
