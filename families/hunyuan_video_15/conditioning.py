"""HunyuanVideo 1.5's CONDITIONING, as ComfyUI's native 1.5 text encoder makes it, so HyStream's and native
nodes mix: `[[states [1, L, 3584], {"attention_mask": [1, L], "conditioning_byt5small": [1, Lg, 1472]}]]`.

The prompt's Qwen2.5-VL states unpadded; `attention_mask` optional (native drops it when nothing is masked;
ours is all ones); `conditioning_byt5small` only when the prompt quotes text (no key: no glyph tokens).
There is no pooled vector (native sets `pooled_output` to None): a tensor there marks HunyuanVideo 1.0's
CONDITIONING (LLaVA states + CLIP-L's pooled vector), which is refused. A start image (image-to-video) rides
in the same entry as ComfyUI's HunyuanVideo15ImageToVideo puts it: `concat_latent_image`, `concat_mask`,
and `clip_vision_output` (SigLIP) when given.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from ...errors import InputError

log = logging.getLogger("hystream")

GLYPH_KEY = "conditioning_byt5small"
FIX = "connect the CONDITIONING of HyStreamTextEncode with HunyuanVideo 1.5's text encoders (Qwen2.5-VL + ByT5), " \
      "or of ComfyUI's CLIPTextEncode with its HunyuanVideo 1.5 text encoders"


def to_conditioning(embeds) -> list:
    """ComfyUI's native CONDITIONING for HunyuanVideo 1.5 from a text.PromptEmbeds."""
    extra = {"attention_mask": embeds.mask}
    if embeds.glyph is not None:
        extra[GLYPH_KEY] = embeds.glyph
    return [[embeds.states, extra]]


@dataclass
class Cond:
    states: torch.Tensor  # [1, L, C]
    mask: torch.Tensor | None  # [1, L] or None (all valid)
    glyph: torch.Tensor | None  # [1, Lg, G] or None (nothing quoted)
    glyph_mask: torch.Tensor | None = None  # [1, Lg]; None: every glyph token valid (both formats are unpadded)
    extra: dict = field(default_factory=dict)  # the whole entry's dict (a start image's entries, SigLIP's output)

    @property
    def start_image(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(concat_latent_image [B, C, T, h, w], concat_mask [1, 1, T, h, w]) when a start image is attached."""
        image, mask = self.extra.get("concat_latent_image"), self.extra.get("concat_mask")
        return None if image is None else (image, mask)


def _shape(t) -> str:
    return str(list(t.shape)) if torch.is_tensor(t) else type(t).__name__


def read_conditioning(cond, what: str = "positive", text_dim: int | None = None, glyph_dim: int | None = None) -> Cond:
    """Accept CONDITIONING made by HyStreamTextEncode or by ComfyUI's own HunyuanVideo 1.5 text encoder;
    text_dim / glyph_dim: the DiT's widths, when the caller knows them."""
    if not isinstance(cond, (list, tuple)) or not cond or not isinstance(cond[0], (list, tuple)) or len(cond[0]) < 2 \
            or not isinstance(cond[0][1], dict):
        raise InputError(f"{what} CONDITIONING: [[states, {{...}}]]", type(cond).__name__, FIX)
    if len(cond) > 1:
        log.warning("HyStream: the %s conditioning has %d entries; the first one is used", what, len(cond))
    states, extra = cond[0][0], cond[0][1]
    if not torch.is_tensor(states) or states.dim() != 3 or states.shape[0] != 1:
        raise InputError(f"{what} text states [1, L, {text_dim or 3584}]", _shape(states), FIX)
    if torch.is_tensor(extra.get("pooled_output")):
        raise InputError(f"a HunyuanVideo 1.5 {what} CONDITIONING (Qwen2.5-VL states [1, L, 3584], no pooled vector)",
                         f"HunyuanVideo 1.0's (text states {_shape(states)} with a CLIP-L pooled vector "
                         f"{_shape(extra['pooled_output'])})",
                         "encode the prompt with HunyuanVideo 1.5's text encoders (Qwen2.5-VL + ByT5): HunyuanVideo "
                         "1.0's text encoders (LLaVA-Llama-3 + CLIP-L) belong with a HunyuanVideo 1.0 DiT")
    if text_dim is not None and states.shape[2] != text_dim:
        raise InputError(f"{what} text states {text_dim} wide (the DiT's text input)", f"{_shape(states)}", FIX)
    mask = extra.get("attention_mask")
    if mask is not None:
        mask = mask.reshape(1, -1)
        if mask.shape[1] != states.shape[1]:
            raise InputError(f"an attention_mask as long as the text ({states.shape[1]})", f"{mask.shape[1]}", FIX)
    glyph = extra.get(GLYPH_KEY)
    if glyph is not None:
        if not torch.is_tensor(glyph) or glyph.dim() != 3 or glyph.shape[0] != 1 or \
                (glyph_dim is not None and glyph.shape[2] != glyph_dim):
            raise InputError(f"glyph states ({GLYPH_KEY}) [1, Lg, {glyph_dim or 1472}]", _shape(glyph), FIX)
        if glyph.shape[1] == 0:
            glyph = None
    return Cond(states, mask, glyph, extra=extra)


class VisionOutput:
    """What ComfyUI's CLIPVisionEncode hands on as clip_vision_output (attributes, also readable as items):
    here the SigLIP states [1, 729, 1152] the 1.5 DiT takes."""

    def __init__(self, last_hidden_state: torch.Tensor):
        self.last_hidden_state = last_hidden_state

    def __getitem__(self, key: str):
        return getattr(self, key)


def with_start_image(conditioning, image_latent: torch.Tensor, frames: int, vision_states=None) -> list:
    """CONDITIONING with the start image attached as ComfyUI's HunyuanVideo15ImageToVideo does:
    `concat_latent_image` [B, C, T, h, w] with the image's latent frames first and zeros after, `concat_mask`
    [1, 1, T, h, w] 0 on the image's frames and 1 after (T = the video's latent frames). Raw VAE latents in
    float32, as the native node stores them; `vision_states` (SigLIP's) as `clip_vision_output`. Entries are
    copied, never changed in place (ComfyUI caches node outputs)."""
    if not isinstance(conditioning, (list, tuple)) or not conditioning:
        raise InputError("a CONDITIONING", type(conditioning).__name__, "connect HyStreamTextEncode's output")
    if not torch.is_tensor(image_latent) or image_latent.dim() != 5:
        raise InputError("the start image's latent [B, C, t, h, w]", _shape(image_latent),
                         "encode the start image with HunyuanVideo 1.5's VAE")
    t = (frames - 1) // 4 + 1
    shown = min(image_latent.shape[2], t)  # as the native node, which encodes at most `length` frames
    b, c, _, h, w = image_latent.shape
    latent = torch.zeros(b, c, t, h, w, device=image_latent.device)  # float32, as the native node's
    latent[:, :, :shown] = image_latent[:, :, :shown]
    mask = torch.ones(1, 1, t, h, w, device=image_latent.device)
    mask[:, :, :shown] = 0
    out = []
    for entry in conditioning:
        extra = dict(entry[1]) if len(entry) > 1 and isinstance(entry[1], dict) else {}
        extra.update(concat_latent_image=latent, concat_mask=mask)
        if vision_states is not None:
            extra["clip_vision_output"] = VisionOutput(vision_states)
        out.append([entry[0], extra])
    return out
