"""HyStreamStepCache: step caching for the sampler (dit → dit). The policy itself is sampling/step_cache.py."""

from __future__ import annotations

from dataclasses import replace

from ..sampling.step_cache import METHODS, StepCacheSettings
from .guard import node_errors

DEFAULTS = {"teacache": 0.15, "first_block": 0.1, "mag_cache": 0.12}


class HyStreamStepCache:
    DESCRIPTION = ("Skips DiT steps that would barely change the video: the sampler reuses the residual its "
                   "blocks added last time, and a skipped step also copies no block weights to the GPU. "
                   "TeaCache (published HunyuanVideo calibration; 0.1 ≈ 1.6×, 0.15 ≈ 2.1× at 720p), First-Block "
                   "Cache (runs the first double block, then decides), MagCache (MagCache's published HunyuanVideo "
                   "ratios). threshold 0 = off, output identical to no cache.")
    CATEGORY = "HyStream"
    RETURN_TYPES = ("HYSTREAM_DIT",)
    RETURN_NAMES = ("dit",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "dit": ("HYSTREAM_DIT", {"tooltip": "From HyStreamDiTLoader (or HyStreamLoRA)."}),
            "method": (list(m for m in METHODS if m != "off"), {"default": "teacache", "tooltip":
                       "teacache: decides from the first block's modulated input (nothing streamed on a skipped "
                       "step); first_block: runs the first double block, then decides; mag_cache: decides from "
                       "the published magnitude ratios."}),
            "threshold": ("FLOAT", {"default": 0.15, "min": 0.0, "max": 2.0, "step": 0.01, "tooltip":
                          "Higher skips more steps (faster, less faithful). 0 = off. TeaCache 0.1-0.15, First-Block "
                          "0.05-0.1, MagCache 0.06-0.24."}),
            "start": ("FLOAT", {"default": 0.1, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip":
                      "Fraction of the steps always computed first (the composition is decided early)."}),
            "end": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip":
                    "Steps from this fraction on are always computed (the first and last steps always are)."}),
            "max_skips": ("INT", {"default": 3, "min": 0, "max": 100, "tooltip":
                          "Most consecutive skipped steps (0 = no limit)."}),
        }}

    @node_errors("setting up the step cache")
    def apply(self, dit, method, threshold, start, end, max_skips):
        settings = StepCacheSettings(method, float(threshold), float(start), float(end), int(max_skips))
        return (replace(dit, step_cache=settings),)
