"""3D rotary position embedding over (t, h, w) token grids.

Each axis gets its own slice of the head dim (HunyuanVideo: 16, 56, 56 of 128), frequencies
theta^(-2i/d) computed in float64 like the reference, and pairs (x[2i], x[2i+1]) are rotated.
"""

from __future__ import annotations

import torch


def rope_cos_sin(grid: tuple[int, int, int], axes_dim: tuple[int, ...], theta: float,
                 device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape [t·h·w, sum(axes_dim)] in fp32, tokens in (t, h, w) row-major order."""
    coords = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in grid], indexing="ij")
    cos_parts, sin_parts = [], []
    for pos, dim in zip(coords, axes_dim):
        freqs = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64)[: dim // 2] / dim))
        angles = torch.outer(pos.reshape(-1), freqs)
        cos_parts.append(angles.cos().repeat_interleave(2, dim=1))
        sin_parts.append(angles.sin().repeat_interleave(2, dim=1))
    cos = torch.cat(cos_parts, dim=1).float().to(device)
    sin = torch.cat(sin_parts, dim=1).float().to(device)
    return cos, sin


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, L, H, D] by cos/sin [L, D]; math in fp32, result in x's dtype."""
    pairs = x.unflatten(-1, (-1, 2))
    rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    cos = cos[None, :, None, :]
    sin = sin[None, :, None, :]
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)
