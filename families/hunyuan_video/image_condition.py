"""Image-to-video: how the start image's latent enters each step, for the three DiT variants.

The image arrives as ComfyUI's HunyuanVideo I2V nodes carry it, so native and HyStream nodes mix: the
CONDITIONING holds `concat_latent_image` (raw VAE latent of the start image, [B, 16, 1, h, w]) and
`concat_mask` (0 on the image's latent frames), or — ComfyUI's "v2 (replace)" — `guiding_frame_index` 0
with the image latent in frame 0 of the LATENT. What is done with it is decided by the DiT's weights:
- "latent_concat" (HunyuanVideo-I2V, 33 channels): input = [noisy latent | image latent on frame 0, zeros
  after | mask 1 on frame 0]; every frame is denoised; Tencent's decode drops the first 4 frames.
- "concat" (SkyReels-I2V, 32 channels): input = [noisy latent | image latent on frame 0, zeros after].
- "token_replace" (HunyuanVideo-I2V v2, 16 channels): frame 0 of the input is the clean image latent,
  modulated with t = 0 inside the DiT; only frames 1… are denoised.
All in model space (the VAE scaling factor applied), as the reference pipelines do.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ...errors import InputError

log = logging.getLogger("hystream")

BLEND = 0.999  # HunyuanVideo-I2V starts from noise·0.999 + image·0.001 (the reference pipeline's t)
DROPPED_FRAMES = 4  # decoded frames the latent-concat reference drops (the re-encoded start image)
IMAGE_INTERLEAVE = {"latent_concat": 2, "token_replace": 4}  # image states the reference keeps: every n-th
FIX = "connect the start image through HyStreamImageToVideo (or ComfyUI's HunyuanImageToVideo)"


@dataclass
class ImageCondition:
    kind: str  # "latent_concat" | "concat" | "token_replace"
    latent: torch.Tensor  # the start image, model space, [B, 16, 1, h, w] float32

    def first_frame_tokens(self, patch: tuple) -> int:
        return (self.latent.shape[3] // patch[1]) * (self.latent.shape[4] // patch[2]) if self.kind == "token_replace" else 0


def start_image_latent(extra: dict, latent: torch.Tensor) -> torch.Tensor | None:
    """The start image's raw latent from a CONDITIONING's extras (or, ComfyUI's v2, the LATENT's frame 0)."""
    image = extra.get("concat_latent_image") if isinstance(extra, dict) else None
    if image is None and isinstance(extra, dict) and extra.get("guiding_frame_index") is not None:
        index = int(extra["guiding_frame_index"])
        if index != 0:
            raise InputError("the start image on latent frame 0", f"guiding_frame_index {index}", FIX)
        image = latent[:, :, :1]
    if image is None:
        return None
    if not torch.is_tensor(image) or image.dim() != 5 or image.shape[1] != latent.shape[1]:
        raise InputError(f"a start-image latent [B, {latent.shape[1]}, 1, h, w]",
                         f"{getattr(image, 'shape', type(image).__name__)}", FIX)
    if tuple(image.shape[3:]) != tuple(latent.shape[3:]):
        raise InputError(f"a start image of the video's size ({latent.shape[4] * 8}×{latent.shape[3] * 8} px)",
                         f"one of {image.shape[4] * 8}×{image.shape[3] * 8} px",
                         "give HyStreamImageToVideo the same width and height as the video latent")
    return image[:, :, :1].float().cpu()


def image_condition(variant: str | None, image: torch.Tensor | None, scaling: float, batch: int) -> ImageCondition | None:
    """What this DiT does with the start image (None: text-to-video). Refuses an I2V DiT without one."""
    if variant is not None and image is None:
        what = "HunyuanVideo-I2V (33 input channels)" if variant == "latent_concat" else "SkyReels-I2V (32 input channels)"
        raise InputError("a start image for this image-to-video DiT", f"{what} and no start image in the positive "
                         "CONDITIONING", FIX + " and give its positive output to the sampler")
    if image is None:
        return None
    if image.shape[0] not in (1, batch):
        raise InputError(f"1 or {batch} start images", f"{image.shape[0]}", "use one start image per video")
    return ImageCondition(variant or "token_replace", (image * scaling).expand(batch, -1, -1, -1, -1).contiguous())


def initial_latents(cond: ImageCondition, eps: torch.Tensor, from_noise: bool) -> torch.Tensor:
    """The sampler's starting point: HunyuanVideo-I2V blends a little of the image into the noise
    (t = 0.999, in float32 as the reference); token replace puts the clean image on frame 0."""
    x = eps
    if from_noise and cond.kind != "concat":
        t = torch.tensor([BLEND], dtype=torch.float32)
        x = eps * t + cond.latent * (1 - t)
    if cond.kind == "token_replace":
        x = torch.cat((cond.latent, x[:, :, 1:]), 2)
    return x


def model_input(cond: ImageCondition, x: torch.Tensor) -> torch.Tensor:
    """What the DiT sees at a step with latents `x` [B, 16, T, h, w]."""
    if cond.kind == "token_replace":
        return x  # frame 0 is, and stays, the clean image (its velocity is held at 0)
    image = torch.cat((cond.latent, cond.latent.new_zeros(x.shape[0], x.shape[1], x.shape[2] - 1, *x.shape[3:])), 2)
    if cond.kind == "concat":
        return torch.cat((x, image), 1)
    mask = torch.zeros(x.shape[0], 1, *x.shape[2:])
    mask[:, :, 0] = 1
    return torch.cat((x, image, mask), 1)


def hold_first_frame(cond: ImageCondition, v: torch.Tensor) -> torch.Tensor:
    """Token replace denoises frames 1… only: frame 0's velocity is 0, so it stays the clean image."""
    if cond.kind == "token_replace":
        v = v.clone()
        v[:, :, 0] = 0
    return v


def check_prompt_kind(cond: ImageCondition | None, interleave: int | None) -> None:
    """Warn when the prompt was encoded for another variant: an image prompt (HyStreamTextEncodeImage) on a
    T2V or SkyReels run, or an image interleave other than the reference's for this DiT. It runs, but the
    DiT sees a prompt it was not trained on."""
    if interleave is None:
        return
    kind = cond.kind if cond is not None else None
    if kind in (None, "concat"):
        log.warning("HyStream: the prompt carries the start image's tokens (HyStreamTextEncodeImage), but this DiT is "
                    "%s, which was trained on text prompts: use HyStreamTextEncode", "SkyReels-I2V" if kind else "text-to-video")
    elif interleave != IMAGE_INTERLEAVE[kind]:
        log.warning("HyStream: image_interleave %d on a %s DiT; its reference uses %d", interleave, kind,
                    IMAGE_INTERLEAVE[kind])
