"""HunyuanVideo 1.0's CONDITIONING, as ComfyUI's native nodes make it, so HyStream's and native nodes mix:
`[[states [1, L, 4096], {"pooled_output": [1, 768], "attention_mask": [1, L]}]]` (the mask optional, the
text unpadded), plus a start image's entries for image-to-video (image_condition.py)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from ...errors import InputError
from .text import PromptEmbeds

log = logging.getLogger("hystream")


def to_conditioning(embeds: PromptEmbeds) -> list:
    """ComfyUI's native CONDITIONING for HunyuanVideo."""
    return [[embeds.states, {"pooled_output": embeds.pooled, "attention_mask": embeds.mask}]]


@dataclass
class Cond:
    states: torch.Tensor  # [1, L, C]
    mask: torch.Tensor | None  # [1, L] or None (all valid)
    pooled: torch.Tensor  # [1, P]
    extra: dict = field(default_factory=dict)  # the rest of the entry (an I2V start image, see image_condition.py)


def read_conditioning(cond, what: str = "positive") -> Cond:
    """Accept CONDITIONING made by HyStreamTextEncode or by ComfyUI's own HunyuanVideo text encoder
    (attention_mask optional, text not padded)."""
    fix = "connect the CONDITIONING of HyStreamTextEncode (or ComfyUI's HunyuanVideo text encoder)"
    if not isinstance(cond, (list, tuple)) or not cond or not isinstance(cond[0], (list, tuple)) or len(cond[0]) < 2:
        raise InputError(f"{what} CONDITIONING: [[states, {{'pooled_output': ...}}]]", f"{type(cond).__name__}", fix)
    if len(cond) > 1:
        log.warning("HyStream: the %s conditioning has %d entries; the first one is used", what, len(cond))
    states, extra = cond[0][0], cond[0][1]
    if not torch.is_tensor(states) or states.dim() != 3 or states.shape[0] != 1:
        raise InputError(f"{what} text states [1, L, 4096]", f"{getattr(states, 'shape', type(states).__name__)}", fix)
    pooled = extra.get("pooled_output") if isinstance(extra, dict) else None
    if pooled is None:
        glyph = isinstance(extra, dict) and "conditioning_byt5small" in extra
        found = (f"HunyuanVideo 1.5's (Qwen2.5-VL states {list(states.shape)}{' and ByT5 glyph states' if glyph else ''}, "
                 "no pooled vector)") if states.shape[-1] != 4096 or glyph else "none"
        raise InputError(f"a HunyuanVideo 1.0 {what} CONDITIONING with a pooled CLIP-L vector ('pooled_output')",
                         found, fix + "; HunyuanVideo 1.5's text encoders (Qwen2.5-VL + ByT5) belong with a "
                         "HunyuanVideo 1.5 DiT")
    mask = extra.get("attention_mask")
    if mask is not None:
        mask = mask.reshape(1, -1)
        if mask.shape[1] != states.shape[1]:
            raise InputError(f"an attention_mask as long as the text ({states.shape[1]})", f"{mask.shape[1]}", fix)
    return Cond(states, mask, pooled.reshape(1, -1), extra)


def with_start_image(conditioning, image_latent: torch.Tensor, frames: int) -> list:
    """CONDITIONING with the start image attached as ComfyUI's HunyuanImageToVideo "v1 (concat)" does
    (`concat_latent_image`, `concat_mask` 0 on the image's latent frame), which the sampler reads for every
    I2V variant. Entries are copied, never changed in place (ComfyUI caches node outputs)."""
    if not isinstance(conditioning, (list, tuple)) or not conditioning:
        raise InputError("a CONDITIONING", type(conditioning).__name__, "connect HyStreamTextEncode's output")
    t = (frames - 1) // 4 + 1
    mask = torch.ones(1, 1, t, image_latent.shape[3], image_latent.shape[4])
    mask[:, :, :1] = 0
    out = []
    for entry in conditioning:
        extra = dict(entry[1]) if len(entry) > 1 and isinstance(entry[1], dict) else {}
        extra.update(concat_latent_image=image_latent, concat_mask=mask)
        out.append([entry[0], extra])
    return out
