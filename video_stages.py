"""The VAE stages: tiled decode and encode with memory planned for the stage, and the start image of an
image-to-video run, for any family's VAE (its geometry comes from the VAE's config)."""

from __future__ import annotations

import logging

import torch

from .errors import InputError
from .numerics import CAUSES, check_finite
from .sampling import latents
from .sizes import automatic_budget
from .vae import codec as vae_codec
from .vae.tiling import DEFAULT_TILES, Hooks, TileSpec

log = logging.getLogger("hystream")
VAE_CAUSES = "a damaged VAE file (download it again) or fp16 VAE compute overflowing"


# -- the VAE stage's memory -----------------------------------------------------------------------------
def vae_stage_plan(vae, latent_shape: tuple, spec: TileSpec, what: str, available: int | None) -> tuple[TileSpec, int]:
    """(tiles with the automatic sizes resolved for `available` device bytes, bytes the stage needs:
    the VAE's weights plus one tile's peak). `available` None: the CPU, or the device's own free memory."""
    from .vae.planning import auto_tiles, tile_peak_bytes
    from .vae.tiling import check_tiles

    model = vae.model
    check_tiles(spec, model.cfg.space_compression, model.cfg.time_compression)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    budget = None if available is None else max(0, automatic_budget(available) - weights)
    resolved = auto_tiles(model, spec, tuple(latent_shape), budget, what)
    return resolved, weights + tile_peak_bytes(model, resolved, what)


def decode(vae, latent: torch.Tensor, spec: TileSpec = DEFAULT_TILES, hooks: Hooks | None = None,
           clamp: bool = True) -> torch.Tensor:
    """Raw latents → IMAGE frames [B·F, H, W, 3] in [0, 1] (not clamped with clamp=False). With hooks.ranks,
    the ranks share the tiles and only rank 0 gets the frames (the others: None)."""
    latents.check_latent(vae.latent, latent, "decode latents made for this VAE's model family")
    check_finite(latent, "the latent to decode", "a sampler that failed numerically; " + CAUSES)
    frames = vae_codec.decode(vae.model, latent, spec, hooks, clamp=clamp)
    return None if frames is None else check_finite(frames, "the decoded frames", VAE_CAUSES)


def crop_video(vae, frames) -> torch.Tensor:
    """IMAGE frames cut to what the VAE encodes (4k+1 frames, sides multiples of 16), with a warning
    saying what was cut; done once before the stage so its memory is planned for the real size."""
    from .vae.tiling import crop_for_encode

    if not torch.is_tensor(frames) or frames.dim() != 4 or frames.shape[-1] != 3:
        raise InputError("IMAGE frames [F, H, W, 3]", f"{getattr(frames, 'shape', type(frames).__name__)}",
                         "connect video frames, e.g. from HyStreamLoadVideo")
    return crop_for_encode(frames, vae.cfg.time_compression, vae.latent.side_multiple)


def encode_video(vae, frames: torch.Tensor, spec: TileSpec = DEFAULT_TILES, hooks: Hooks | None = None) -> torch.Tensor:
    """IMAGE frames → raw latents (posterior mean), cropped to 4k+1 frames and sides multiple of 16."""
    check_finite(frames, "the input frames", "an input video that did not decode correctly")
    return check_finite(vae_codec.encode(vae.model, frames, spec, crop=True, hooks=hooks,
                                         multiple=vae.latent.side_multiple), "the encoded latents",
                        VAE_CAUSES)


# -- image-to-video -------------------------------------------------------------------------------------
def fit_image(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """The first IMAGE frame [1, height, width, 3]: center-cropped to the video's aspect ratio, then
    resized (bilinear, antialiased), with a warning saying what was cut. Same size: untouched."""
    if not torch.is_tensor(image) or image.dim() != 4 or image.shape[-1] < 3:
        raise InputError("a start IMAGE [N, H, W, 3]", f"{getattr(image, 'shape', type(image).__name__)}",
                         "connect a LoadImage output (or any IMAGE) as start_image")
    frame = image[:1, :, :, :3].float()
    h0, w0 = frame.shape[1], frame.shape[2]
    if (h0, w0) == (height, width):
        return frame
    scale = max(width / w0, height / h0)
    crop_w, crop_h = min(w0, round(width / scale)), min(h0, round(height / scale))
    top, left = (h0 - crop_h) // 2, (w0 - crop_w) // 2
    if (crop_w, crop_h) != (w0, h0):
        log.warning("HyStream: the start image (%dx%d) was cropped to %dx%d (from x=%d, y=%d) to match the video's "
                    "aspect ratio, then resized to %dx%d", w0, h0, crop_w, crop_h, left, top, width, height)
    frame = frame[:, top:top + crop_h, left:left + crop_w].permute(0, 3, 1, 2)
    frame = torch.nn.functional.interpolate(frame, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return frame.permute(0, 2, 3, 1).clamp(0, 1)


def encode_start_image(vae, image: torch.Tensor, width: int, height: int, spec: TileSpec = DEFAULT_TILES,
                       hooks: Hooks | None = None) -> torch.Tensor:
    """A start IMAGE → its raw latent [1, C, 1, height/s, width/s] (posterior mean, as the reference image-to-video
    pipelines and ComfyUI's nodes encode it)."""
    latents.check_video_size(vae.latent, width, height, 1)
    frame = vae.family.fit_start_image(image, width, height)
    frame = check_finite(fit_image(image, width, height) if frame is None else frame, "the start image",
                         "an image that did not load correctly")
    return check_finite(vae_codec.encode(vae.model, frame, spec, crop=False, hooks=hooks), "the start image's latent",
                        VAE_CAUSES)


# -- frames a family's reference drops after decoding (HunyuanVideo-I2V: the re-encoded start image) ----------
DROP_KEY = "hystream_drop_frames"  # carried in the LATENT from the sampler to the decode node


def latent_output(samples: torch.Tensor, drop: int) -> dict:
    """The sampler's LATENT: raw latents, and how many decoded frames its family's reference drops."""
    return {"samples": samples, **({DROP_KEY: int(drop)} if drop else {})}


def drop_leading_frames(frames: torch.Tensor, drop: int) -> torch.Tensor:
    """Decoded frames without the first `drop` (never all of them)."""
    drop = int(drop or 0)
    return frames[drop:] if 0 < drop < frames.shape[0] else frames

