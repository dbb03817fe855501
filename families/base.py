"""What the engine asks of a model family, and the plain values a family answers with.

The engine (offload/, quant/, loaders/, vae/, sampling/, models/, pipeline, planner, nodes, CLI) never
imports a family package: it looks families up in the registry (families/__init__.py) and talks to them
through these types. A family is a package under families/ that builds one `Family`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CacheConstants:
    """A family's published step-cache calibrations.

    teacache_coefficients: TeaCache's rescaling polynomial for the family's first-block relative L1
        distance, highest power first (numpy.poly1d order); empty when none is published.
    mag_ratios: MagCache's per-step magnitude ratios, by the video height they were calibrated at
        ({720: (...), 544: (...)}); the run picks the closest height and resamples to its steps.
    """

    teacache_coefficients: tuple[float, ...] = ()
    mag_ratios: tuple[tuple[int, tuple[float, ...]], ...] = ()

    def mag_ratios_for(self, height: int) -> tuple[float, ...] | None:
        """The calibration closest to `height` (ties go to the taller one), or None when none is published."""
        if not self.mag_ratios:
            return None
        return min(self.mag_ratios, key=lambda hr: (abs(hr[0] - height), -hr[0]))[1]
