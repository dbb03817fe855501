"""HunyuanVideo-I2V's prompt: LLaVA's vision tower (loaded from its file, run once, freed) turns the start
image into the template's image tokens; the Llama layers stream as for text alone."""

from __future__ import annotations

import torch

from ...errors import InputError
from ...numerics import check_finite
from .conditioning import to_conditioning
from .vision import clip_pixels
from .vision_loader import load_vision


def image_conditioning(text_encoder, vision_path: str, image, prompt: str, interleave: int = 2) -> list:
    if not isinstance(interleave, int) or not 1 <= interleave <= 8:
        raise InputError("image_interleave from 1 to 8 (2: HunyuanVideo-I2V latent concat, 4: token replace)",
                         repr(interleave), "use 2 or 4")
    encoder = text_encoder.encoder
    vision = load_vision(vision_path, encoder.device, encoder.dtype)
    try:
        if vision.width != encoder.llama.hidden:
            raise InputError(f"a vision projector to the Llama width ({encoder.llama.hidden})",
                             f"one to {vision.width} in {vision_path}", "use the vision file of the same LLaVA model")
        with torch.no_grad():
            pixels = clip_pixels(image, vision.image_size).to(encoder.device, encoder.dtype)
            features = check_finite(vision(pixels), "the start image's vision features")
    finally:
        del vision  # the tower is needed once per image
    embeds = text_encoder.encode_with_image(prompt, features, interleave)
    check_finite(embeds.states, "the LLaVA-Llama-3 prompt states")
    cond = to_conditioning(embeds)
    cond[0][1]["hystream_image_interleave"] = interleave  # lets the sampler check it against the DiT
    return cond
