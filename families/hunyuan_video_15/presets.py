"""HunyuanVideo 1.5's sampler settings per released variant (Tencent's PIPELINE_CONFIGS, diffusers' conversion
script): what the CLI starts from and the README lists. The variant is read from the file name (480p / 720p,
t2v / i2v, cfg_distilled / step_distilled, as Comfy-Org and Tencent name them) and from the weights: a MeanFlow
timestep embedder (`time_r_in`) marks the step-distilled model whatever the file is called."""

from __future__ import annotations

import os
import re

from ..base import SamplerDefaults

SHIFTS = {("480p", "t2v"): 5.0, ("480p", "i2v"): 5.0, ("720p", "t2v"): 9.0, ("720p", "i2v"): 7.0}
STEPS, CFG = 50, 6.0
STEP_DISTILLED = SamplerDefaults(steps=12, flow_shift=7.0, embedded_guidance=None, cfg=1.0)  # 8-12 steps; 12 recommended


def variant(dit_name: str, meanflow: bool) -> str:
    """'480p_t2v', '720p_i2v_cfg_distilled', '480p_i2v_step_distilled', … (480p and t2v when the name says nothing)."""
    path = os.path.normpath(str(dit_name))  # Tencent's files say it in their folder: transformer/720p_i2v/…
    name = os.path.join(os.path.basename(os.path.dirname(path)), os.path.basename(path)).lower()
    resolution = "720p" if "720p" in name else "480p"
    task = "i2v" if re.search(r"i2v|image.?to.?video", name) else "t2v"
    kind = "_step_distilled" if meanflow or "step_distill" in name else "_cfg_distilled" if "distill" in name else ""
    return f"{resolution}_{task}{kind}"


def preset(dit_name: str, meanflow: bool) -> tuple[str, SamplerDefaults]:
    """(the variant, its settings): 50 steps, shift 5 / 5 / 9 / 7 (480p t2v / i2v, 720p t2v / i2v), cfg 6; the
    CFG-distilled models cfg 1; the step-distilled (MeanFlow) one 12 steps, shift 7, cfg 1."""
    name = variant(dit_name, meanflow)
    if name.endswith("_step_distilled"):
        return name, STEP_DISTILLED
    resolution, task = name.split("_")[:2]
    cfg = 1.0 if name.endswith("_cfg_distilled") else CFG
    return name, SamplerDefaults(steps=STEPS, flow_shift=SHIFTS[resolution, task], embedded_guidance=None, cfg=cfg)
