"""The step-cache defaults the node (nodes/step_cache.py) and the CLI (`--step-cache`, `--cache-*`) show:
one table, read by both. Plain values, no torch. The method names are the registry's
(sampling/step_caches/__init__.py, METHODS); tests/test_step_cache.py checks that both name the same."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MethodDefaults:
    label: str  # as the tooltips name it
    threshold: float  # the default threshold
    recommended: tuple[float, float]  # the range worth trying (published figures, HunyuanVideo)


METHOD_DEFAULTS = {
    "teacache": MethodDefaults("TeaCache", 0.15, (0.1, 0.15)),  # 0.1 ≈ 1.6×, 0.15 ≈ 2.1× at 720p
    "first_block": MethodDefaults("First-Block", 0.1, (0.05, 0.1)),
    "mag_cache": MethodDefaults("MagCache", 0.12, (0.06, 0.24)),
}
DEFAULT_METHOD = "teacache"  # the node's: its one threshold widget shows this method's default
START = 0.1  # fraction of the steps always computed first (the composition is decided early)
END = 1.0  # steps from this fraction on are always computed
MAX_SKIPS = 3  # most consecutive skipped steps (0 = no limit)


def default_threshold(method: str) -> float:
    return METHOD_DEFAULTS[method].threshold


def recommended_text() -> str:
    """'TeaCache 0.1-0.15 (default 0.15), First-Block 0.05-0.1 (default 0.1), MagCache 0.06-0.24 (default 0.12)'."""
    return ", ".join(f"{d.label} {d.recommended[0]:g}-{d.recommended[1]:g} (default {d.threshold:g})"
                     for d in METHOD_DEFAULTS.values())
