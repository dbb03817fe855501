"""HunyuanVideo 1.5's causal 3D VAE: 32 latent channels, 16× space and 4× time compression.

Causal in time (replicate-padded convolutions, a frame-causal mid attention): the first frame is coded
alone and each later latent frame covers four video frames. Resolution changes are DC-AE style: channels
↔ 2×2(×2) sub-positions with averaged / repeated shortcuts (vae_layers.py), so no resnet changes its
width. Encoder output: conv_out + the mid features averaged in channel groups (mean | log-variance);
decoder input: conv_in + the latent's channels repeated. Module names are Tencent's (the Comfy-Org file).

Decoding at video resolution runs chunk by chunk in time (`Decoder.chunk_frames` latent frames at a
time, the causal context carried between chunks): the same result as the whole clip at once, with the
activations of one chunk instead of the clip's. Encoding likewise (`Encoder.chunk_frames`).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
from torch import nn

from .vae_layers import CausalConv3d, Downsample, MidBlock, ResnetBlock, RMSNorm, Upsample

SCALING_FACTOR = 1.03682  # latents = mean × this for the DiT, no shift: a fact the weights do not tell
CHUNK_FRAMES = 1  # latent frames per chunk below the mid block (4 video frames); None = the whole clip at once
PIECE_PIXELS = 256 * 256  # and at most this many positions (frames × h × w) per piece at each level


@dataclass(frozen=True)
class VAEConfig:
    block_out_channels: tuple[int, ...] = (128, 256, 512, 1024, 1024)  # encoder order, full resolution first
    layers_per_block: int = 2  # resnets per encoder level (the decoder has one more)
    latent_channels: int = 32
    in_channels: int = 3
    space_compression: int = 16  # 2 ** (levels that resample)
    time_compression: int = 4  # 2 ** (levels that also resample time)
    # latent frames a temporal tile must decode before its first one to match the whole clip: None = all
    # of them (the mid attention sees every earlier frame; the convolutions alone reach ~40 latent frames)
    causal_context: int | None = None

    @property
    def levels(self) -> int:
        return len(self.block_out_channels)

    @property
    def space_levels(self) -> int:
        return int(math.log2(self.space_compression))

    @property
    def time_levels(self) -> int:
        return int(math.log2(self.time_compression))

    def encoder_resampler(self, i: int) -> bool | None:
        """Level i's downsampler: None (none), False (space only) or True (space and time); time is
        halved in the last resampling levels."""
        return None if i >= self.space_levels else i >= self.space_levels - self.time_levels

    def decoder_resampler(self, i: int) -> bool | None:
        """Level i's upsampler (decoder order, latent end first); time is doubled in the first levels."""
        return None if i >= self.space_levels else i < self.time_levels


class Level(nn.Module):
    """One resolution: its resnets (`block`), then its resampler (`downsample` / `upsample`) if any."""

    def __init__(self, channels: int, resnets: int, resampler: nn.Module | None, name: str):
        super().__init__()
        self.block = nn.ModuleList([ResnetBlock(channels) for _ in range(resnets)])
        if resampler is not None:
            setattr(self, name, resampler)
        self._resampler = name if resampler is not None else None

    def forward(self, x: torch.Tensor, cache: dict | None, first: bool) -> torch.Tensor:
        for r in self.block:
            x = r(x, cache)
        return x if self._resampler is None else getattr(self, self._resampler)(x, cache, first)


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        ch = cfg.block_out_channels
        self.cfg = cfg
        self.chunk_frames: int | None = CHUNK_FRAMES
        self.conv_in = CausalConv3d(cfg.in_channels, ch[0])
        self.down = nn.ModuleList()
        for i in range(cfg.levels):
            kind = cfg.encoder_resampler(i)
            resampler = None if kind is None else Downsample(ch[i], ch[i + 1], kind)
            self.down.append(Level(ch[i], cfg.layers_per_block, resampler, "downsample"))
        self.mid = MidBlock(ch[-1])
        self.norm_out = RMSNorm(ch[-1])
        self.conv_out = CausalConv3d(ch[-1], 2 * cfg.latent_channels)

    def _down(self, x: torch.Tensor, cache: dict | None, first: bool) -> torch.Tensor:
        x = self.conv_in(x, cache)
        for level in self.down:
            x = level(x, cache, first)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Video [B, 3, 4k+1, H, W] → [B, 64, k+1, H/16, W/16]: mean | log-variance."""
        step = (self.chunk_frames or 0) * self.cfg.time_compression
        n = x.shape[2]
        if not step or n <= 1 + step:
            h = self._down(x, None, True)
        else:  # the first chunk takes the first frame too: the temporal groups stay aligned
            cache, bounds = {}, [0, *range(1 + step, n, step), n]
            h = torch.cat([self._down(x[:, :, a:e], cache, a == 0) for a, e in itertools.pairwise(bounds)], dim=2)
        h = self.mid(h)
        b, _c, t, hh, ww = h.shape
        shortcut = h.view(b, 2 * self.cfg.latent_channels, -1, t, hh, ww).mean(dim=2)
        return self.conv_out(h, None, self.norm_out).add_(shortcut)


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        ch = tuple(reversed(cfg.block_out_channels))
        self.cfg = cfg
        self.chunk_frames: int | None = CHUNK_FRAMES
        self.piece_pixels = PIECE_PIXELS
        self.conv_in = CausalConv3d(cfg.latent_channels, ch[0])
        self.mid = MidBlock(ch[0])
        self.up = nn.ModuleList()
        for i in range(cfg.levels):
            kind = cfg.decoder_resampler(i)
            resampler = None if kind is None else Upsample(ch[i], ch[i + 1], kind)
            self.up.append(Level(ch[i], cfg.layers_per_block + 1, resampler, "upsample"))
        self.norm_out = RMSNorm(ch[-1])
        self.conv_out = CausalConv3d(ch[-1], cfg.in_channels)

    def _up(self, x: torch.Tensor) -> torch.Tensor:
        for level in self.up:
            x = level(x, None, True)
        return self.conv_out(x, None, self.norm_out)

    def _stream(self, i: int, x: torch.Tensor, cache: dict, first: bool, out: torch.Tensor, start: int) -> int:
        """Levels i… and the head on the frames `x` (in order after what `cache` has seen), depth first:
        each level's output goes on in pieces whose next output has at most `piece_pixels` positions.
        Returns the next output frame."""
        if i == len(self.up):
            y = self.conv_out(x, cache, self.norm_out)
            out[:, :, start:start + y.shape[2]] = y
            return start + y.shape[2]
        y = self.up[i](x, cache, first)
        grows = i + 1 < len(self.up) and self.cfg.decoder_resampler(i + 1) is not None
        step = max(1, self.piece_pixels // (y.shape[3] * y.shape[4] * (4 if grows else 1)))  # the next output's size
        for k in range(0, y.shape[2], step):
            start = self._stream(i + 1, y[:, :, k:k + step], cache, first and k == 0, out, start)
        return start

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Latents [B, 32, T, h, w] → video [B, 3, 4(T−1)+1, 16h, 16w]."""
        x = self.conv_in(z).add_(z.repeat_interleave(self.conv_in.conv.out_channels // z.shape[1], dim=1))
        x = self.mid(x)  # latent resolution: small, and the attention needs every earlier frame
        if not self.chunk_frames:
            return self._up(x)
        b, _, t, h, w = x.shape
        s, tc, n = self.cfg.space_compression, self.cfg.time_compression, self.chunk_frames
        out = x.new_empty((b, self.cfg.in_channels, tc * (t - 1) + 1, s * h, s * w))
        cache, start = {}, 0
        for a in range(0, t, n):
            start = self._stream(0, x[:, :, a:a + n], cache, a == 0, out, start)
        return out


class HunyuanVideo15VAE(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder: Encoder | None = Encoder(cfg)
        self.decoder = Decoder(cfg)

    @property
    def dtype(self) -> torch.dtype:
        return self.decoder.conv_in.conv.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.decoder.conv_in.conv.weight.device

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Raw latents [B, 32, T, h, w] (not scaled) → video in [-1, 1], [B, 3, 4(T−1)+1, 16h, 16w] (untiled)."""
        return self.decoder(z.to(self.device, self.dtype))

    def encode_moments(self, x: torch.Tensor) -> torch.Tensor:
        """Video in [-1, 1] [B, 3, 4k+1, H, W] → [B, 64, k+1, H/16, W/16]: posterior mean and log-variance
        (unclamped; diffusers clamps the log-variance to [-30, 20]) (untiled)."""
        return self.encoder(x.to(self.device, self.dtype))
