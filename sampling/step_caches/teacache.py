"""TeaCache (Liu et al. 2024, ali-vilab/TeaCache; TeaCache4HunyuanVideo): the relative L1 change of the
first double block's modulated image input, rescaled by the family's published polynomial, is
accumulated; while the sum stays below the threshold the step reuses the residual of all the blocks.
The decision is made before any block runs, so a skipped step moves no weights (the probe, the first
double block's `img_mod`, is a device copy the sampler makes once per run)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ...errors import InputError
from ..step_cache import PassState, StepCache


@dataclass
class TeaCacheState(PassState):
    previous: torch.Tensor | None = None  # the modulated input of the previous step
    accumulated: float = 0.0  # rescaled distance since the last computed step


def rescale(coefficients: tuple[float, ...], x: float) -> float:
    """The polynomial (highest power first, numpy.poly1d order) at x, by Horner's rule."""
    value = 0.0
    for c in coefficients:
        value = value * x + c
    return value


class TeaCache(StepCache):
    State = TeaCacheState
    needs_probe = True
    kept_per_pass = 2  # the residual and the previous modulated input

    def __init__(self, settings, steps, constants, height, **hooks):
        super().__init__(settings, steps, constants, height, **hooks)
        if not constants.teacache_coefficients:
            raise InputError(f"TeaCache's rescaling coefficients published for {constants.family}",
                             "none published", "use first_block (it needs no calibration)"
                             + (" or mag_cache" if constants.mag_ratios else ""), where="the step cache")
        self.coefficients = tuple(constants.teacache_coefficients)

    def before_blocks(self, img: torch.Tensor, probe: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        return self.skipped(img) if self.decided(self._skip(probe())) else None

    def _skip(self, modulated: torch.Tensor) -> bool:
        st = self.state
        previous, st.previous = st.previous, modulated
        if not self.eligible() or previous is None or st.residual is None:
            st.accumulated = 0.0
            return False
        rel = ((modulated - previous).abs().mean() / previous.abs().mean()).item()
        st.accumulated += rescale(self.coefficients, rel)
        if st.accumulated < self.settings.threshold:
            return True
        st.accumulated = 0.0
        return False

    def after_first_block(self, before: torch.Tensor, after: torch.Tensor) -> None:
        return None  # decided before the blocks

    def after_blocks(self, img_in: torch.Tensor | None, img_out: torch.Tensor) -> None:
        self.computed(img_out - img_in)
