"""The step-cache methods, one class per method (the interface is sampling/step_cache.py), chosen by name
here and nowhere else."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ...errors import InputError
from ..step_cache import StepCache, StepCacheSettings
from .first_block import FirstBlockCache
from .mag_cache import MagCache
from .teacache import TeaCache

if TYPE_CHECKING:  # annotations only
    from ...families.base import CacheConstants

METHODS: dict[str, type[StepCache]] = {"teacache": TeaCache, "first_block": FirstBlockCache, "mag_cache": MagCache}


def make_step_cache(settings: StepCacheSettings | None, steps: int, height: int, constants: CacheConstants, *,
                    on_decided: Callable[[], None] | None = None,
                    on_skip_rest: Callable[[], None] | None = None,
                    agree: Callable[[bool], bool] | None = None) -> StepCache | None:
    """The cache for one sampling run of `steps` steps at `height` pixels, with the model family's
    `constants`; None when off (no settings, method "off" or threshold 0: the run is exactly uncached).
    `on_decided` / `on_skip_rest`: the streamer's hooks for a cache that pauses it after the first block;
    `agree`: rank 0's decision for every rank (sequence parallelism)."""
    if settings is None or settings.method == "off":
        return None
    if settings.method not in METHODS:
        raise InputError(f"a step cache method among off, {', '.join(METHODS)}", repr(settings.method),
                         "pick one of those", where="the step cache")
    if not settings.active:
        return None
    return METHODS[settings.method](settings, steps, constants, height, on_decided=on_decided,
                                    on_skip_rest=on_skip_rest, agree=agree)
