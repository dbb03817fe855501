"""FramePack (lllyasviel, 2025): HunyuanVideo 1.0's DiT fine-tuned to predict one section of a video from a
packed history. Beside the 1.0 DiT it has three history patch embedders (`clean_x_embedder`: the recent
frames at the DiT's own (1, 2, 2) patch, older ones through (2, 4, 4) and (4, 8, 8) kernels, so a long
history costs few tokens), a projection of the start image's SigLIP states that goes before the text tokens,
and RoPE at given frame indices (the history's tables averaged over the coarse kernels).

The blocks are the 1.0 DiT's and stream the same way; only the tokens they see differ: [4x, 2x, clean,
noisy] image tokens, [image, text] context tokens; the final layer predicts the noisy ones."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import InputError
from ...models.layers import Linear, meta_param
from ...models.sequence import ImageTokens
from .config import DiTConfig
from .dit import HunyuanVideoDiT

HISTORY_KERNELS = {"proj": (1, 2, 2), "proj_2x": (2, 4, 4), "proj_4x": (4, 8, 8)}  # on the latent grid


@dataclass(frozen=True)
class PackedHistory:
    """One section's inputs besides its noisy latents: their frame indices, and the history — clean latents
    at full resolution, 2x and 4x — each with its frame indices (raw model-space latents [B, C, T, H, W])."""

    indices: torch.Tensor
    clean: torch.Tensor | None = None
    clean_indices: torch.Tensor | None = None
    history_2x: torch.Tensor | None = None
    indices_2x: torch.Tensor | None = None
    history_4x: torch.Tensor | None = None
    indices_4x: torch.Tensor | None = None

    def parts(self):
        """(embedder, latents, indices) from the finest to the coarsest: the order they are packed in,
        each before the previous one."""
        return [("proj", self.clean, self.clean_indices), ("proj_2x", self.history_2x, self.indices_2x),
                ("proj_4x", self.history_4x, self.indices_4x)]


def pad_to(x: torch.Tensor, kernel: tuple[int, int, int]) -> torch.Tensor:
    """Replicate-pad the last three dims of [B, C, T, H, W] up to multiples of the kernel (as the reference)."""
    pads = [(-n) % k for n, k in zip(x.shape[2:], kernel)]
    if not any(pads):
        return x
    return F.pad(x, (0, pads[2], 0, pads[1], 0, pads[0]), mode="replicate")


def index_rope(indices: torch.Tensor, h: int, w: int, axes: tuple[int, ...], theta: float, device):
    """cos, sin [len(indices)·h·w, sum(axes)] for tokens at these frame indices on an h × w patch grid, in
    float32 as FramePack computes them (its frequencies are float32, 1.0's are float64)."""
    grid = torch.meshgrid(indices.to(device, torch.float32), torch.arange(h, device=device, dtype=torch.float32),
                          torch.arange(w, device=device, dtype=torch.float32), indexing="ij")
    cos, sin = [], []
    for pos, dim in zip(grid, axes):
        freqs = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32, device=device) / dim))
        angles = torch.outer(pos.reshape(-1), freqs)
        cos.append(angles.cos().repeat_interleave(2, dim=1))
        sin.append(angles.sin().repeat_interleave(2, dim=1))
    return torch.cat(cos, 1), torch.cat(sin, 1)


def pooled_rope(table: torch.Tensor, h: int, w: int, kernel: tuple[int, int, int]) -> torch.Tensor:
    """A coarse history's table: the full-resolution one replicate-padded and averaged over the kernel on
    the patch grid, as its tokens cover that many patches."""
    grid = table.T.unflatten(1, (-1, h, w))[None]  # [1, D, T, h, w]
    return F.avg_pool3d(pad_to(grid, kernel), kernel, stride=kernel).flatten(2)[0].T


class HistoryEmbed(nn.Module):
    """The history's three patch embedders (`proj`, `proj_2x`, `proj_4x`), weights bound by the loader."""

    def __init__(self, in_channels: int, hidden: int):
        super().__init__()
        for name, kernel in HISTORY_KERNELS.items():
            conv = nn.Module()
            conv.weight, conv.bias = meta_param(hidden, in_channels, *kernel), meta_param(hidden)
            setattr(self, name, conv)

    def forward(self, name: str, x: torch.Tensor) -> torch.Tensor:
        conv, kernel = getattr(self, name), HISTORY_KERNELS[name]
        w, b = conv.weight.to(x.dtype), conv.bias.to(x.dtype)
        return F.conv3d(pad_to(x, kernel), w, b, stride=kernel).flatten(2).transpose(1, 2)


class ImageProjection(nn.Module):
    """SigLIP states → context tokens: up (×3 the hidden size), SiLU, down."""

    def __init__(self, in_dim: int, hidden: int):
        super().__init__()
        self.up = Linear(in_dim, 3 * hidden)
        self.down = Linear(3 * hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.up(x)))


class FramePackDiT(HunyuanVideoDiT):
    title = "FramePack"

    def __init__(self, cfg: DiTConfig, estimator=None):
        super().__init__(cfg, estimator)
        self.clean_x_embedder = HistoryEmbed(cfg.in_channels, cfg.hidden)
        self.image_projection = ImageProjection(cfg.image_proj_dim, cfg.hidden)

    def forward(self, x, timestep, txt, txt_mask=None, pooled=None, guidance=None, *, history: PackedHistory | None = None,
                image_embeds: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """As the 1.0 DiT, with `history` (the section's frame indices and packed history) and
        `image_embeds` (the start image's SigLIP states [B, N, image_proj_dim])."""
        if history is None or image_embeds is None:
            raise InputError("a FramePack section: the packed history and the start image's SigLIP states",
                             f"history {'given' if history is not None else 'none'}, image states "
                             f"{'given' if image_embeds is not None else 'none'}",
                             "sample a FramePack DiT with the FramePack sampler (HyStreamFramePackSampler)")
        if image_embeds.dim() != 3 or image_embeds.shape[-1] != self.cfg.image_proj_dim:
            raise InputError(f"SigLIP states [B, N, {self.cfg.image_proj_dim}]", f"shape {list(image_embeds.shape)}",
                             "encode the start image with the SigLIP vision model (sigclip_vision_patch14_384)")
        return super().forward(x, timestep, txt, txt_mask, pooled, guidance, history=history, image_embeds=image_embeds,
                               **kwargs)

    def image_input(self, x: torch.Tensor, grid: tuple, context: dict):
        history: PackedHistory = context["history"]
        dev, dt = self.device, self.compute_dtype
        _, h, w = grid
        axes, theta = self.cfg.rope_axes, self.cfg.rope_theta
        cos, sin = index_rope(history.indices, h, w, axes, theta, dev)
        tokens, coses, sins = [self.img_in(x)], [cos], [sin]
        for name, latents, indices in history.parts():
            if latents is None:
                continue
            tokens.insert(0, self.clean_x_embedder(name, latents.to(dev, dt)))
            cos, sin = index_rope(indices, h, w, axes, theta, dev)
            kernel = tuple(k // p for k, p in zip(HISTORY_KERNELS[name], self.cfg.patch))  # on the patch grid
            if kernel != (1, 1, 1):
                cos, sin = pooled_rope(cos, h, w, kernel), pooled_rope(sin, h, w, kernel)
            coses.insert(0, cos)
            sins.insert(0, sin)
        img = torch.cat(tokens, 1)  # the packed history and the latents: small sections, made whole
        return (ImageTokens(img.shape[1], lambda a, b: img[:, a:b]), (torch.cat(coses), torch.cat(sins)),
                img.shape[1] - tokens[-1].shape[1])

    def context_input(self, txt: torch.Tensor, txt_mask: torch.Tensor | None, context: dict):
        image = self.image_projection(context["image_embeds"].to(self.device, self.compute_dtype))
        image = image.expand(txt.shape[0], -1, -1) if image.shape[0] == 1 else image
        if txt_mask is not None:  # the image tokens are all valid
            txt_mask = torch.cat((torch.ones(image.shape[:2], dtype=torch.bool, device=txt_mask.device), txt_mask), 1)
        return torch.cat((image, txt), 1), txt_mask
