"""3D rotary position embedding over (t, h, w) token grids.

Each axis gets its own slice of the head dim (HunyuanVideo: 16, 56, 56 of 128), frequencies
theta^(-2i/d) computed in float64 like the reference, and pairs (x[2i], x[2i+1]) are rotated.
"""

from __future__ import annotations

import torch


class GridRope:
    """cos or sin of a token grid kept per axis ([n, dim] each) and assembled for the tokens asked: the
    whole [t·h·w, D] fp32 table (0.11 GiB at 720p × 129 for cos and sin) never exists in the lean path,
    which asks for one chunk of rows at a time. `table[a:b]` equals rows a..b of the whole table the reference builds
    over all tokens (the same float64 values per axis, gathered, not recomputed)."""

    def __init__(self, axes: list[torch.Tensor], grid: tuple[int, int, int]):
        self.axes, self.grid = axes, tuple(grid)
        self.rows = grid[0] * grid[1] * grid[2]

    def __len__(self) -> int:
        return self.rows

    def __getitem__(self, rows: slice) -> torch.Tensor:
        a, b, step = rows.indices(self.rows)
        i = torch.arange(a, b, step, device=self.axes[0].device)
        _, h, w = self.grid
        index = (i // (h * w), (i // w) % h, i % w)
        return torch.cat([t[j] for t, j in zip(self.axes, index)], 1)


def grid_rope(grid: tuple[int, int, int], axes_dim: tuple[int, ...], theta: float,
              device: torch.device | str = "cpu") -> tuple[GridRope, GridRope]:
    """cos, sin [t·h·w, sum(axes_dim)] in fp32, tokens in (t, h, w) row-major order, as GridRope (per axis:
    one upload of a few KiB)."""
    cos_axes, sin_axes = [], []
    for n, dim in zip(grid, axes_dim):
        freqs = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64)[: dim // 2] / dim))
        angles = torch.outer(torch.arange(n, dtype=torch.float64), freqs)
        cos_axes.append(angles.cos().repeat_interleave(2, dim=1).float().to(device))
        sin_axes.append(angles.sin().repeat_interleave(2, dim=1).float().to(device))
    return GridRope(cos_axes, grid), GridRope(sin_axes, grid)


def apply_rope(x: torch.Tensor, cos, sin) -> torch.Tensor:
    """Rotate x [B, L, H, D] by cos/sin [L, D] (tensors or row views like GridRope); math in fp32, result in x's dtype."""
    if not torch.is_tensor(cos):  # the plain path: the whole table (a GridRope, a rank's rows of one)
        cos, sin = cos[:], sin[:]
    pairs = x.unflatten(-1, (-1, 2))
    rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    cos = cos[None, :, None, :]
    sin = sin[None, :, None, :]
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)
