"""A VAE of any family, loaded whole onto the host and moved to the device for its stage (a video VAE is
small: 0.5–2.5 GB). The family reads its file layouts (families/<name>/vae_loader.py); the handle is here."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .tensor_source import TensorSource

CPU = torch.device("cpu")  # the default device (immutable: one instance serves every VAE)


@dataclass
class LoadedVAE:
    model: nn.Module  # the family's VAE: .decode / .encode_moments, .cfg (space/time compression, channels)
    layout: str
    path: str
    has_encoder: bool
    family: object  # families.base.Family
    source: TensorSource = field(repr=False, default=None)
    device: torch.device = CPU  # the compute device it was loaded for

    @property
    def cfg(self):
        return self.model.cfg

    @property
    def latent(self):
        """The family's latent format (channels, compression, scaling)."""
        return self.family.latent

    def to_device(self) -> None:
        self.model.to(self.device)

    def release_device(self) -> None:
        self.model.to("cpu")

    def _comfy_cache_tensors(self):
        """Sizes this handle for ComfyUI's RAM-pressure cache (0.38): its weights while in RAM."""
        return [p for p in self.model.parameters() if p.device.type == "cpu"]

    def close(self) -> None:
        self.model.to("meta")
        if self.source is not None:
            self.source.close()
