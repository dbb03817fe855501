"""HyStreamStepCache: step caching for the sampler (dit → dit). The caches themselves are sampling/step_cache.py (the
interface) and sampling/step_caches/ (one class per method; defaults.py: the defaults shown here and by the CLI)."""

from __future__ import annotations

from dataclasses import replace

from ..sampling.step_cache import StepCacheSettings
from ..sampling.step_caches import METHODS
from ..sampling.step_caches import defaults as D
from .guard import node_errors


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
            "method": (list(METHODS), {"default": D.DEFAULT_METHOD, "tooltip":
                       "teacache: decides from the first block's modulated input (nothing streamed on a skipped "
                       "step); first_block: runs the first double block, then decides; mag_cache: decides from "
                       "the published magnitude ratios."}),
            "threshold": ("FLOAT", {"default": D.default_threshold(D.DEFAULT_METHOD), "min": 0.0, "max": 2.0,
                          "step": 0.01, "tooltip": "Higher skips more steps (faster, less faithful). 0 = off. "
                          f"{D.recommended_text()}."}),
            "start": ("FLOAT", {"default": D.START, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip":
                      "Fraction of the steps always computed first (the composition is decided early)."}),
            "end": ("FLOAT", {"default": D.END, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip":
                    "Steps from this fraction on are always computed (the first and last steps always are)."}),
            "max_skips": ("INT", {"default": D.MAX_SKIPS, "min": 0, "max": 100, "tooltip":
                          "Most consecutive skipped steps (0 = no limit)."}),
        }}

    @node_errors("setting up the step cache")
    def apply(self, dit, method, threshold, start, end, max_skips):
        settings = StepCacheSettings(method, float(threshold), float(start), float(end), int(max_skips))
        return (replace(dit, step_cache=settings),)
