"""First-Block Cache (ParaAttention; diffusers `apply_first_block_cache`): run the first double block; if
the mean absolute change of its residual relative to the last computed step's is at most the threshold,
skip the rest and add the cached residual of the remaining blocks. The streamer pauses after the first
double block until the step decides (`on_decided` / `on_skip_rest`), so a skipped step moves only the
blocks up to it. Needs no calibration."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..step_cache import PassState, StepCache


@dataclass
class FirstBlockState(PassState):
    previous: torch.Tensor | None = None  # the first block's residual on the last computed step
    head_output: torch.Tensor | None = None  # the first block's image output, while the step computes


class FirstBlockCache(StepCache):
    State = FirstBlockState
    pauses_after_first_block = True
    kept_per_pass = 2  # the residual of the remaining blocks and the first block's
    transient = 2  # the image stream before the first block, and its output

    def before_blocks(self, img: torch.Tensor, probe: Callable[[], torch.Tensor] | None = None) -> None:
        return None  # decided after the first block

    def after_first_block(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor | None:
        st = self.state
        residual = after - before
        if st.previous is None or not self.eligible():
            skip = False
        else:
            diff = (residual - st.previous).abs().mean() / st.previous.abs().mean()
            skip = bool(diff.item() <= self.settings.threshold)
        if self.decided(skip) and st.residual is not None:
            self.end_step(False)
            if self.on_skip_rest is not None:
                self.on_skip_rest()
            return after + st.residual
        st.previous, st.head_output = residual, after.clone()
        if self.on_decided is not None:
            self.on_decided()
        return None

    def after_blocks(self, img_in: torch.Tensor | None, img_out: torch.Tensor) -> None:
        """Keeps the residual of the blocks after the first one."""
        st = self.state
        residual = img_out - st.head_output if st.head_output is not None else None
        st.head_output = None
        self.computed(residual)
