"""HunyuanVideo's causal 3D VAE: 16 latent channels, 8× space and 4× time compression.

Causal in time: every 3D convolution pads the time axis with two copies of the first frame (replicate)
and nothing after, so frame t only sees frames ≤ t, the first frame is coded alone and each later latent
frame covers four video frames. The mid-block attention is frame-causal too (a token sees its own and
earlier frames). Module names follow the diffusers/Tencent layout; the config is read from shapes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import vae_lean as lean

GROUPS = 32
EPS = 1e-6
SCALING_FACTOR = 0.476986


@dataclass(frozen=True)
class VAEConfig:
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    latent_channels: int = 16
    in_channels: int = 3
    time_compression: int = 4
    space_compression: int = 8
    groups: int = GROUPS

    @property
    def levels(self) -> int:
        return len(self.block_out_channels)


class CausalConv3d(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int = 3, stride=1):
        super().__init__()
        self.pad = (kernel // 2, kernel // 2, kernel // 2, kernel // 2, kernel - 1, 0)
        self.conv = nn.Conv3d(cin, cout, kernel, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.pad, mode="replicate"))


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=EPS)
        self.conv1 = CausalConv3d(cin, cout)
        self.norm2 = nn.GroupNorm(groups, cout, eps=EPS)
        self.conv2 = CausalConv3d(cout, cout)
        self.conv_shortcut = CausalConv3d(cin, cout, kernel=1) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return h + (self.conv_shortcut(x) if self.conv_shortcut is not None else x)


class CausalAttention(nn.Module):
    """One-head self-attention over all (t, h, w) tokens, a token seeing its own and earlier frames."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, channels, eps=EPS)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        tokens = self.group_norm(x).permute(0, 2, 3, 4, 1).reshape(b, 1, t * h * w, c)
        q, k, v = self.to_q(tokens), self.to_k(tokens), self.to_v(tokens)
        del tokens
        hw = h * w
        # frame by frame, each frame's queries against the keys of frames ≤ it: the block-causal mask
        # without building it (an N×N mask is 0.3 GB at one 720p tile), and mask-free fused kernels
        out = torch.cat([F.scaled_dot_product_attention(q[:, :, f * hw:(f + 1) * hw], k[:, :, :(f + 1) * hw],
                                                        v[:, :, :(f + 1) * hw]) for f in range(t)], dim=2)
        del q, k, v
        out = self.to_out[0](out).reshape(b, t, h, w, c).permute(0, 4, 1, 2, 3)
        return x + out


class MidBlock(nn.Module):
    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(channels, channels, groups), ResnetBlock(channels, channels, groups)])
        self.attentions = nn.ModuleList([CausalAttention(channels, groups)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resnets[1](self.attentions[0](self.resnets[0](x)))


class Resample(nn.Module):
    """Strided causal conv (down) or nearest upsampling + causal conv (up). `factor` is (t, h, w);
    when time is resampled the first frame keeps its own (spatial-only) path."""

    def __init__(self, channels: int, factor: tuple[int, int, int], up: bool):
        super().__init__()
        self.factor = factor
        self.up = up
        self.conv = CausalConv3d(channels, channels, 3, stride=1 if up else factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            first = F.interpolate(x[:, :, :1].squeeze(2), scale_factor=self.factor[1:], mode="nearest").unsqueeze(2)
            if x.shape[2] > 1:
                rest = F.interpolate(x[:, :, 1:].contiguous(), scale_factor=self.factor, mode="nearest")
                x = torch.cat((first, rest), dim=2)
            else:
                x = first
        return self.conv(x)


def _resample_plan(cfg: VAEConfig) -> list[tuple[int, int, int] | None]:
    """Per level (encoder order, high resolution first): the (t, h, w) factor of its resampler."""
    space_levels = int(math.log2(cfg.space_compression))
    time_levels = int(math.log2(cfg.time_compression))
    plan = []
    for i in range(cfg.levels):
        last = i == cfg.levels - 1
        space = i < space_levels
        time = (not last) and i >= cfg.levels - 1 - time_levels
        plan.append((2 if time else 1, 2 if space else 1, 2 if space else 1) if (space or time) else None)
    return plan


class Stage(nn.Module):
    def __init__(self, resnets: list[ResnetBlock], resampler: Resample | None, up: bool):
        super().__init__()
        self.resnets = nn.ModuleList(resnets)
        name = "upsamplers" if up else "downsamplers"
        setattr(self, name, nn.ModuleList([resampler]) if resampler is not None else None)
        self._resampler_name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for r in self.resnets:
            x = r(x)
        resamplers = getattr(self, self._resampler_name)
        return resamplers[0](x) if resamplers is not None else x


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        ch = cfg.block_out_channels
        self.conv_in = CausalConv3d(cfg.in_channels, ch[0])
        blocks, cin = [], ch[0]
        for i, factor in enumerate(_resample_plan(cfg)):
            res = [ResnetBlock(cin if j == 0 else ch[i], ch[i], cfg.groups) for j in range(cfg.layers_per_block)]
            blocks.append(Stage(res, Resample(ch[i], factor, up=False) if factor else None, up=False))
            cin = ch[i]
        self.down_blocks = nn.ModuleList(blocks)
        self.mid_block = MidBlock(ch[-1], cfg.groups)
        self.conv_norm_out = nn.GroupNorm(cfg.groups, ch[-1], eps=EPS)
        self.conv_out = CausalConv3d(ch[-1], 2 * cfg.latent_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        return self.conv_out(F.silu(self.conv_norm_out(self.mid_block(x))))


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.chunk_frames: int | None = lean.CHUNK_FRAMES  # lean path (vae/lean.py); None = plain
        ch = list(reversed(cfg.block_out_channels))
        plan = _resample_plan(cfg)  # the same rule: space in the first levels, time in the middle ones
        self.conv_in = CausalConv3d(cfg.latent_channels, ch[0])
        self.mid_block = MidBlock(ch[0], cfg.groups)
        blocks, cin = [], ch[0]
        for i in range(cfg.levels):
            res = [ResnetBlock(cin if j == 0 else ch[i], ch[i], cfg.groups) for j in range(cfg.layers_per_block + 1)]
            factor = plan[i]
            blocks.append(Stage(res, Resample(ch[i], factor, up=True) if factor else None, up=True))
            cin = ch[i]
        self.up_blocks = nn.ModuleList(blocks)
        self.conv_norm_out = nn.GroupNorm(cfg.groups, ch[-1], eps=EPS)
        self.conv_out = CausalConv3d(ch[-1], cfg.in_channels)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.mid_block(self.conv_in(z))  # latent resolution: small
        if not self.chunk_frames:
            for block in self.up_blocks:
                x = block(x)
            return self.conv_out(F.silu(self.conv_norm_out(x)))
        n = self.chunk_frames
        for block in self.up_blocks:
            for r in block.resnets:
                x = lean.resnet(r, x, n)
            if block.upsamplers is not None:
                x = lean.upsample(block.upsamplers[0], x, n)
        return lean.head(self, x, n)


class HunyuanVideoVAE(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quant_conv = nn.Conv3d(2 * cfg.latent_channels, 2 * cfg.latent_channels, 1)
        self.post_quant_conv = nn.Conv3d(cfg.latent_channels, cfg.latent_channels, 1)

    @property
    def dtype(self) -> torch.dtype:
        return self.post_quant_conv.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.post_quant_conv.weight.device

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Raw latents [B, 16, T, h, w] → video in [-1, 1], [B, 3, 4(T−1)+1, 8h, 8w] (untiled)."""
        return self.decoder(self.post_quant_conv(z.to(self.device, self.dtype)))

    def encode_moments(self, x: torch.Tensor) -> torch.Tensor:
        """Video in [-1, 1] [B, 3, F, H, W] → [B, 32, T, h, w]: mean and log-variance (untiled)."""
        return self.quant_conv(self.encoder(x.to(self.device, self.dtype)))
