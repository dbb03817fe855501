"""HunyuanVideo 1.5's step-cache calibrations: none is published (TeaCache and MagCache list HunyuanVideo
1.0's only), so only First-Block Cache, which needs none, runs on 1.5; the others are refused by name."""

from __future__ import annotations

from ..base import CacheConstants

CACHE_CONSTANTS = CacheConstants(family="HunyuanVideo 1.5")
