"""Video sizes and LATENTs checked against a family's latent format, before any model work."""

from __future__ import annotations

import torch

from ..errors import InputError
from ..families.base import LatentFormat


def check_video_size(fmt: LatentFormat, width: int, height: int, frames: int) -> None:
    """Sides multiples of the format's side multiple (the VAE's cell × the DiT's patch), 4k+1 frames."""
    m, t = fmt.side_multiple, fmt.time
    bad = [f"width {width}"] if width < m or width % m else []
    bad += [f"height {height}"] if height < m or height % m else []
    bad += [f"{frames} frames"] if frames < 1 or (frames - 1) % t else []
    if bad:
        near = (f"{max(m, round(width / m) * m)}×{max(m, round(height / m) * m)}, "
                f"{max(1, round((frames - 1) / t) * t + 1)} frames")
        raise InputError(f"width and height multiples of {m} and a frame count of {t}k+1 (1, {t + 1}, {2 * t + 1}, …)",
                         ", ".join(bad), f"use e.g. {near}")


def empty_latent(fmt: LatentFormat, width: int, height: int, frames: int, batch: int = 1) -> torch.Tensor:
    """The zeros the host's empty latent node makes for this family."""
    check_video_size(fmt, width, height, frames)
    return torch.zeros(fmt.shape(width, height, frames, batch))


def check_latent(fmt: LatentFormat, latent, fix: str = "use an empty latent for this model or HyStreamVAEEncode") -> None:
    """A LATENT of this family: [B, channels, T, H/space, W/space] whose pixel sides fit the side multiple."""
    s = fmt.space
    if not torch.is_tensor(latent) or latent.dim() != 5 or latent.shape[1] != fmt.channels:
        found = f"{getattr(latent, 'shape', type(latent).__name__)}"
        wanted, other = _owners(fmt, latent)
        if other:
            found = f"{other}'s latent {found} ({latent.shape[1]} channels)"
        raise InputError(f"a {wanted + ' ' if wanted else ''}video LATENT [B, {fmt.channels}, T, H/{s}, W/{s}]", found,
                         fix if not other else f"{fix}: {other}'s latents belong with {other}'s models")
    cells = fmt.side_multiple // s  # latent cells per side multiple
    h, w = latent.shape[3], latent.shape[4]
    if h % cells or w % cells:
        m = fmt.side_multiple
        raise InputError(f"a latent whose pixel width and height are multiples of {m}", f"a latent of {w * s}×{h * s} px",
                         f"use {w // cells * m}×{h // cells * m} or {-(-w // cells) * m}×{-(-h // cells) * m}")


def _owners(fmt: LatentFormat, latent) -> tuple[str, str]:
    """(the title of the family whose format `fmt` is, that of the family whose latents have `latent`'s channels)
    — so a 1.0 latent given to a 1.5 model (or the reverse) is refused naming both."""
    from ..families import registry

    wanted = next((f.title for f in registry.FAMILIES if f.latent == fmt), "")
    channels = latent.shape[1] if torch.is_tensor(latent) and latent.dim() == 5 else None
    other = next((f.title for f in registry.FAMILIES if f.latent.channels == channels and f.latent != fmt), "")
    return wanted, other
