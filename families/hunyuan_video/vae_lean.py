"""Lean execution of the decoder at video resolution: the same maths, about a third of the memory.

The plain decoder keeps ~9 full-resolution 128-channel tensors alive at its peak (norm outputs, padded
copies, conv outputs, interpolations). Everything in it is local in time except GroupNorm, whose
statistics span the whole tile, so:
- GroupNorm statistics are gathered in a first pass over time chunks (fp32, two-pass mean/variance),
  then normalisation, SiLU and each causal 3D convolution run chunk by chunk over output frames, the two
  frames of causal context coming from the real previous frames (replicate padding only at frame 0);
- a resnet writes its second convolution back into its hidden tensor (carrying the two normalised
  frames the next chunk needs), so it holds its input and one hidden tensor, nothing else;
- upsampling builds each chunk's nearest-neighbour frames straight from the input and convolves them
  into a preallocated output.
Used for the mid/up blocks that run at video resolution; the tiny latent-resolution parts run as is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CHUNK_FRAMES = 2  # output frames per chunk at video resolution (+ 2 frames of causal context)


def _chunks(n: int, size: int):
    for a in range(0, n, size):
        yield a, min(n, a + size)


def group_stats(x: torch.Tensor, norm, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """GroupNorm's mean and 1/std per (batch, group), gathered over time chunks in fp32."""
    b, c, t = x.shape[:3]
    g = norm.num_groups
    count = (c // g) * x[0, 0].numel()
    total = torch.zeros(b, g, dtype=torch.float32, device=x.device)
    for a, e in _chunks(t, chunk):
        total += x[:, :, a:e].float().reshape(b, g, -1).sum(-1)
    mean = total / count
    sq = torch.zeros_like(total)
    for a, e in _chunks(t, chunk):
        sq += (x[:, :, a:e].float().reshape(b, g, -1) - mean[..., None]).pow(2).sum(-1)
    return mean, torch.rsqrt(sq / count + norm.eps)


def normalise_act(x: torch.Tensor, norm, stats) -> torch.Tensor:
    """GroupNorm (with the given statistics and the layer's affine) then SiLU, for a chunk of frames;
    in place on one fp32 working copy, so a chunk costs one fp32 and one output-dtype copy."""
    mean, rstd = stats
    b, c = x.shape[:2]
    g = norm.num_groups
    lead = (b, g, 1) + (1,) * (x.dim() - 2)
    xf = x.to(torch.float32, copy=True).reshape((b, g, c // g) + x.shape[2:])
    xf.sub_(mean.view(lead)).mul_(rstd.view(lead))
    y = xf.reshape(x.shape).to(x.dtype)
    del xf
    view = (1, c) + (1,) * (x.dim() - 2)
    y.mul_(norm.weight.view(view).to(x.dtype)).add_(norm.bias.view(view).to(x.dtype))
    return F.silu(y, inplace=True)


def causal_conv(conv, frames: torch.Tensor, missing: int) -> torch.Tensor:
    """A CausalConv3d over `frames`, whose leading frames are the causal context; `missing` context
    frames before the video's first frame are that frame replicated, as the plain path pads."""
    if missing:
        frames = torch.cat([frames[:, :, :1]] * missing + [frames], dim=2)
    pad = conv.pad[:4] + (0, 0)
    return conv.conv(F.pad(frames, pad, mode="replicate"))


def context_range(a: int, ctx: int) -> tuple[int, int]:
    """(first real frame to read, replicated frames to add) for output frames starting at a."""
    s = max(0, a - ctx)
    return s, ctx - (a - s)


def norm_act_conv(x: torch.Tensor, norm, conv, chunk: int) -> torch.Tensor:
    """conv(SiLU(norm(x))) into a new tensor, output frames chunk by chunk, with exact causal context."""
    t = x.shape[2]
    ctx = conv.conv.kernel_size[0] - 1
    stats = group_stats(x, norm, chunk)
    out = None
    for a, e in _chunks(t, chunk):
        s, missing = context_range(a, ctx)
        y = causal_conv(conv, normalise_act(x[:, :, s:e], norm, stats), missing)
        if out is None:
            out = torch.empty(y.shape[:2] + (t,) + y.shape[3:], dtype=y.dtype, device=y.device)
        out[:, :, a:e] = y[:, :, -(e - a):]
        del y
    return out


def resnet(block, x: torch.Tensor, chunk: int = CHUNK_FRAMES) -> torch.Tensor:
    t = x.shape[2]
    ctx = block.conv2.conv.kernel_size[0] - 1
    h = norm_act_conv(x, block.norm1, block.conv1, chunk)
    stats = group_stats(h, block.norm2, chunk)
    carry = None  # the normalised frames just before the chunk: h is overwritten as we go
    for a, e in _chunks(t, chunk):
        cur = normalise_act(h[:, :, a:e], block.norm2, stats)
        frames = cur if carry is None else torch.cat([carry, cur], dim=2)
        if carry is None and ctx:
            frames = torch.cat([frames[:, :, :1]] * ctx + [frames], dim=2)  # before frame 0: replicated
        out = causal_conv(block.conv2, frames, 0)[:, :, -(e - a):]
        carry = frames[:, :, -ctx:].clone() if ctx else None
        out += block.conv_shortcut(x[:, :, a:e]) if block.conv_shortcut is not None else x[:, :, a:e]
        h[:, :, a:e] = out
        del cur, frames, out
    return h


def _source_frames(n_out: int, factor_t: int) -> torch.Tensor:
    """For each upsampled frame, the input frame it repeats (the first frame is never doubled)."""
    idx = torch.arange(n_out)
    return idx if factor_t == 1 else torch.where(idx == 0, 0, 1 + (idx - 1) // factor_t)


def upsample(resample, x: torch.Tensor, chunk: int = CHUNK_FRAMES) -> torch.Tensor:
    ft, fh, fw = resample.factor
    t_out = x.shape[2] if ft == 1 else 1 + (x.shape[2] - 1) * ft
    source = _source_frames(t_out, ft).to(x.device)
    ctx = resample.conv.conv.kernel_size[0] - 1
    out = None
    for a, e in _chunks(t_out, chunk):
        s, missing = context_range(a, ctx)
        frames = x.index_select(2, source[s:e])
        frames = frames.repeat_interleave(fh, dim=3).repeat_interleave(fw, dim=4)  # nearest ×(fh, fw)
        y = causal_conv(resample.conv, frames, missing)[:, :, -(e - a):]
        del frames
        if out is None:
            out = torch.empty(y.shape[:2] + (t_out,) + y.shape[3:], dtype=y.dtype, device=y.device)
        out[:, :, a:e] = y
    return out


def head(decoder, x: torch.Tensor, chunk: int = CHUNK_FRAMES) -> torch.Tensor:
    """conv_norm_out → SiLU → conv_out, chunked: only the 3-channel output is whole."""
    return norm_act_conv(x, decoder.conv_norm_out, decoder.conv_out, chunk)
