"""The building blocks of HunyuanVideo 1.5's causal VAE, each able to run on a whole clip or on a clip
cut into chunks of frames that arrive in order.

Chunks: `cache` (one dict per pass, None for a whole clip) keeps each causal convolution's last two input
frames, which the next chunk's convolution reads as its causal context instead of replicating its own
first frame. The RMS norm is per position and SiLU pointwise, so nothing else looks across frames (the
mid-block attention, which does, always runs on the whole clip): chunks in order give the whole clip's
result. `first`: the chunk holds the clip's first frame, which the temporal resamplers treat apart.
Module names are Tencent's (as the Comfy-Org file stores them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NORM_BLOCK = 1 << 21  # elements normalised at a time (the fp32 temporaries of one block: 8 MiB each)


class CausalConv3d(nn.Module):
    """3D convolution padded by replication: the first frame twice before the clip (nothing after),
    one row/column on each side. With `norm`, it convolves SiLU(norm(x)), computed straight into the
    padded buffer (no separate normalised copy)."""

    def __init__(self, cin: int, cout: int, kernel: int = 3):
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, kernel)

    def forward(self, x: torch.Tensor, cache: dict | None = None, norm: RMSNorm | None = None) -> torch.Tensor:
        k = self.conv.kernel_size[0]
        s, ctx = k // 2, k - 1
        b, c, t, h, w = x.shape
        buf = x.new_empty((b, c, ctx + t, h + 2 * s, w + 2 * s))
        inner = buf[:, :, :, s:s + h, s:s + w]
        if norm is None:
            inner[:, :, ctx:] = x
        else:
            norm.act_into(x, inner[:, :, ctx:])
        past = None if cache is None else cache.get(self)
        inner[:, :, :ctx] = inner[:, :, ctx:ctx + 1] if past is None else past
        if cache is not None:
            cache[self] = inner[:, :, t:].clone()  # the next chunk's causal context
            del past
        if s:  # replicate the edges: rows, then columns (corners included)
            buf[:, :, :, :s, s:s + w] = buf[:, :, :, s:s + 1, s:s + w]
            buf[:, :, :, s + h:, s:s + w] = buf[:, :, :, s + h - 1:s + h, s:s + w]
            buf[..., :s] = buf[..., s:s + 1]
            buf[..., s + w:] = buf[..., s + w - 1:s + w]
        return self.conv(buf)


class RMSNorm(nn.Module):
    """x / ‖x‖ over channels × √C × γ, per position, normalised in fp32 for half inputs: diffusers'
    operations in its order (so its numbers), block by block and in place instead of whole copies."""

    def __init__(self, channels: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels, 1, 1, 1))
        self.scale = channels ** 0.5

    def _into(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        half = x.dtype in (torch.float16, torch.bfloat16)
        rows = max(1, NORM_BLOCK // (x.shape[1] * x.shape[4]))
        for f in range(x.shape[2]):
            for r in range(0, x.shape[3], rows):
                block = x[:, :, f, r:r + rows]
                out[:, :, f, r:r + rows] = F.normalize(block.float() if half else block, dim=1)
        return out.mul_(self.scale).mul_(self.gamma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._into(x, torch.empty_like(x))

    def act_into(self, x: torch.Tensor, out: torch.Tensor) -> None:
        """out ← SiLU(norm(x))."""
        F.silu(self._into(x, out), inplace=True)


class ResnetBlock(nn.Module):
    """norm → SiLU → conv, twice, plus the input (channels never change inside a level)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm1 = RMSNorm(channels)
        self.conv1 = CausalConv3d(channels, channels)
        self.norm2 = RMSNorm(channels)
        self.conv2 = CausalConv3d(channels, channels)

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        h = self.conv1(x, cache, self.norm1)
        h = self.conv2(h, cache, self.norm2)
        return h.add_(x)


class CausalAttention(nn.Module):
    """One-head self-attention over every (t, h, w) token; a token sees the tokens of its own and earlier
    frames. q/k/v/proj_out are 1×1×1 convolutions in the file (applied here as matrices)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = RMSNorm(channels)
        self.q = nn.Conv3d(channels, channels, 1)
        self.k = nn.Conv3d(channels, channels, 1)
        self.v = nn.Conv3d(channels, channels, 1)
        self.proj_out = nn.Conv3d(channels, channels, 1)

    @staticmethod
    def _linear(conv: nn.Conv3d, tokens: torch.Tensor) -> torch.Tensor:
        return F.linear(tokens, conv.weight.view(conv.weight.shape[:2]), conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        tokens = self.norm(x).permute(0, 2, 3, 4, 1).reshape(b, 1, t * h * w, c)
        q, k, v = (self._linear(m, tokens) for m in (self.q, self.k, self.v))
        del tokens
        # frame by frame, each frame's queries against the keys of frames ≤ it: the block-causal mask
        # without building it (N×N, 25 GB for a whole 720p clip) and with mask-free fused kernels
        hw = h * w
        out = torch.empty_like(q)
        for f in range(t):
            out[:, :, f * hw:(f + 1) * hw] = F.scaled_dot_product_attention(
                q[:, :, f * hw:(f + 1) * hw], k[:, :, :(f + 1) * hw], v[:, :, :(f + 1) * hw])
        del q, k, v
        out = self._linear(self.proj_out, out).reshape(b, t, h, w, c).permute(0, 4, 1, 2, 3)
        return out.add_(x)


class MidBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.block_1 = ResnetBlock(channels)
        self.attn_1 = CausalAttention(channels)
        self.block_2 = ResnetBlock(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


def space_to_channels(x: torch.Tensor, rt: int) -> torch.Tensor:
    """[b, c, rt·f, 2h, 2w] → [b, rt·2·2·c, f, h, w] (the sub-position outermost in the channels)."""
    b, c, t, h, w = x.shape
    x = x.view(b, c, t // rt, rt, h // 2, 2, w // 2, 2).permute(0, 3, 5, 7, 1, 2, 4, 6)
    return x.reshape(b, rt * 4 * c, t // rt, h // 2, w // 2)


def channels_to_space(x: torch.Tensor, rt: int) -> torch.Tensor:
    """[b, rt·2·2·c, f, h, w] → [b, c, rt·f, 2h, 2w]: the inverse of space_to_channels."""
    b, packed, t, h, w = x.shape
    c = packed // (rt * 4)
    x = x.view(b, rt, 2, 2, c, t, h, w).permute(0, 4, 5, 1, 6, 2, 7, 3)
    return x.reshape(b, c, t * rt, h * 2, w * 2)


def group_mean(x: torch.Tensor, group: int) -> torch.Tensor:
    """Mean over consecutive groups of `group` channels."""
    b, c, t, h, w = x.shape
    return x.view(b, c // group, group, t, h, w).mean(dim=2)


class Downsample(nn.Module):
    """Conv to cout/factor channels, then 2×2 (×2 in time) sub-positions into channels; the shortcut is
    the input's sub-positions averaged in channel groups. With time: the clip's first frame is packed in
    space only (its channels doubled; its shortcut averages half as many)."""

    def __init__(self, cin: int, cout: int, temporal: bool):
        super().__init__()
        factor = 8 if temporal else 4
        self.conv = CausalConv3d(cin, cout // factor)
        self.temporal = temporal
        self.group = factor * cin // cout

    def forward(self, x: torch.Tensor, cache: dict | None = None, first: bool = True) -> torch.Tensor:
        h = self.conv(x, cache)
        if not self.temporal:
            return space_to_channels(h, 1).add_(group_mean(space_to_channels(x, 1), self.group))
        hs, xs = [], []
        if first:
            h0 = space_to_channels(h[:, :, :1], 1)
            hs.append(torch.cat([h0, h0], dim=1))
            xs.append(group_mean(space_to_channels(x[:, :, :1], 1), self.group // 2))
            h, x = h[:, :, 1:], x[:, :, 1:]
        hs.append(space_to_channels(h, 2))
        xs.append(group_mean(space_to_channels(x, 2), self.group))
        return torch.cat(hs, dim=2).add_(torch.cat(xs, dim=2))


class Upsample(nn.Module):
    """Conv to cout·factor channels, then channels out into 2×2 (×2 in time) sub-positions; the shortcut
    repeats the input's channels. With time: the clip's first frame unpacks in space only (half the
    conv's channels; its shortcut repeats half as often), so it stays one frame."""

    def __init__(self, cin: int, cout: int, temporal: bool):
        super().__init__()
        factor = 8 if temporal else 4
        self.conv = CausalConv3d(cin, cout * factor)
        self.temporal = temporal
        self.cout = cout

    def forward(self, x: torch.Tensor, cache: dict | None = None, first: bool = True) -> torch.Tensor:
        h = self.conv(x, cache)
        b, _, t, hh, ww = x.shape
        rt = 2 if self.temporal else 1
        head = 1 if self.temporal and first else 0  # frames unpacked in space only
        out = h.new_empty((b, self.cout, head + rt * (t - head), 2 * hh, 2 * ww))
        if head:
            _unpack_add(out[:, :, :1], h[:, :, :1], x[:, :, :1], 1)
        _unpack_add(out[:, :, head:], h[:, :, head:], x[:, :, head:], rt)
        return out


def _unpack_add(out: torch.Tensor, h: torch.Tensor, x: torch.Tensor, rt: int) -> None:
    """out ← channels_to_space(h) (its first out-channels of each sub-position) + the shortcut (x's
    channels of that sub-position, each repeated): written sub-position by sub-position, so neither the
    unpacked conv output nor the repeated input exists whole. Equal to diffusers' rearrange-and-add
    (for the spatial-only case, repeat-then-unpack and unpack-then-repeat pick the same channels)."""
    cout = out.shape[1]
    per_h, per_x = h.shape[1] // (rt * 4), x.shape[1] // (rt * 4)
    for q in range(rt * 4):
        a, i, j = q // 4, (q // 2) % 2, q % 2
        part = h[:, q * per_h:q * per_h + cout]
        shortcut = x[:, q * per_x:(q + 1) * per_x].repeat_interleave(cout // per_x, dim=1)
        torch.add(part, shortcut, out=out[:, :, a::rt, i::2, j::2])
