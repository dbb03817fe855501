"""Building blocks whose weights may be stored in any dtype.

Every parameter is created on the meta device (the model is a skeleton until the loader or the streamer
binds real tensors) and cast to the activation dtype at use, so one module runs bf16, fp16, fp32 and fp8
weights alike. fp8 weights may carry a per-tensor `scale_weight` (Comfy `scaled_fp8`): real = fp8 × scale;
GGUF-quantised weights are kept as their bytes and decoded at use (Linear.quant).
The cast happens on the compute device, after the weights arrived there: fp8 stays fp8 on the wire.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..quant.dequant import dequantize

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
NORM_SLICE_VALUES = 1 << 21  # RMSNorm's fp32 temporaries: 8 MB per copy at most


def meta_param(*shape: int) -> nn.Parameter:
    return nn.Parameter(torch.empty(*shape, device="meta"), requires_grad=False)


def cast(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return None if t is None else t.to(dtype)


class Linear(nn.Module):
    """`nn.Linear` that computes in the input's dtype whatever dtype its weight is stored in."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = meta_param(out_features, in_features)
        self.bias = meta_param(out_features) if bias else None
        self.register_buffer("scale_weight", None)  # bound by the loader for scaled-fp8 files
        self.quant = None  # a GGUF quantisation type (quant/kinds.py) when the weight is stored as its bytes
        self.lora: list = []  # LoRA adapters, merged into the weight at use (see loaders/lora.py)

    def compute_weight(self, dtype: torch.dtype, rows: tuple[int, int] | None = None,
                       cols: tuple[int, int] | None = None) -> torch.Tensor:
        """The weight as used (output rows [a, b) and input columns [c, d) only, if given): upcast (× scale)
        on the compute device, LoRA deltas added to that copy only, so the stored weight — resident or
        streamed, bf16 or fp8 — is never modified. Taking a part lets a caller hold a fused or wide weight
        upcast a piece at a time (GGUF: the whole blocks that hold the columns are decoded)."""
        a, b = rows or (0, self.out_features)
        c, d = cols or (0, self.in_features)
        if self.quant is not None:  # GGUF bytes [rows, row_bytes]: decoded here, on the compute device
            size = self.quant.block_size  # whole blocks decoded, the columns asked for kept
            lo, hi = c // size * size, -(-d // size) * size
            data = self.weight[a:b, self.quant.row_bytes(lo):self.quant.row_bytes(hi)] if cols else self.weight[a:b]
            w = dequantize(data, self.quant, hi - lo, dtype)
            if (lo, hi) != (c, d):
                w = w[:, c - lo:d - lo]
        else:
            stored = self.weight[a:b, c:d] if cols else self.weight[a:b]
            w = stored.to(dtype)
        if self.scale_weight is not None:  # in place on the upcast copy: one copy alive, not two
            w = w * self.scale_weight.to(dtype) if self.quant is None and w is stored else w.mul_(self.scale_weight.to(dtype))
        for adapter in self.lora:
            w = adapter.merge(w, a, (c, d) if cols else None)
        return w

    def compute_bias(self, dtype: torch.dtype, rows: tuple[int, int] | None = None) -> torch.Tensor | None:
        if self.bias is None:
            return None
        a, b = rows or (0, self.out_features)
        return self.bias[a:b].to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.compute_weight(x.dtype), self.compute_bias(x.dtype))

    def in_row_pieces(self, x: torch.Tensor, rows: int) -> list[torch.Tensor]:
        """The output as pieces of `rows` outputs each, the weight upcast one piece at a time (a wide
        projection of a short input, e.g. the modulation: its weight, not its output, is what is large)."""
        return [F.linear(x, self.compute_weight(x.dtype, (a, a + rows)), self.compute_bias(x.dtype, (a, a + rows)))
                for a in range(0, self.out_features, rows)]

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


class LowRankAdapter:
    """A low-rank update B·A·factor to one Linear's weight (a LoRA part), applied to the weight's transient
    compute copy at use; `rows` places it in a row range of a fused projection. A and B stay on the compute
    device for the run: rank × (in + out) values."""

    def __init__(self, down: torch.Tensor, up: torch.Tensor, factor: float, rows: tuple[int, int] | None,
                 device, dtype):
        self.down = down.to(device=device, dtype=dtype)
        self.up = up.to(device=device, dtype=dtype)
        self.factor = factor
        self.rows = rows

    def merge(self, w: torch.Tensor, offset: int = 0, cols: tuple[int, int] | None = None) -> torch.Tensor:
        """w + the low-rank delta, as a new tensor (w may be the stored weight itself). w holds rows
        [offset, offset + len(w)) of the full weight (and its input columns `cols`, if given): only the
        delta's rows and columns that fall there are added."""
        first = self.rows[0] if self.rows else 0  # full-weight row of self.up's row 0
        lo, hi = max(first, offset), min(first + self.up.shape[0], offset + w.shape[0])
        if lo >= hi:
            return w
        down = self.down if cols is None else self.down[:, cols[0]:cols[1]]
        delta = (self.up[lo - first:hi - first].to(w.dtype) @ down.to(w.dtype)) * self.factor
        a, b = lo - offset, hi - offset
        if a == 0 and b == w.shape[0]:
            return w + delta
        return torch.cat([w[:a], w[a:b] + delta, w[b:]])


class RMSNorm(nn.Module):
    """RMS norm over the last dim, statistics in fp32 (as Tencent's and diffusers' q/k norms)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = meta_param(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # a slice of rows at a time: the fp32 temporaries of a slice, not of the whole input (the DiT's
        # q/k norms run on chunks of hundreds of thousands of values)
        out = torch.empty_like(x)
        rows_in, rows_out = x.reshape(-1, x.shape[-1]), out.view(-1, x.shape[-1])
        weight, step = self.weight.to(x.dtype), max(1, NORM_SLICE_VALUES // x.shape[-1])
        for a in range(0, rows_in.shape[0], step):
            xf = rows_in[a:a + step].float()
            rows_out[a:a + step] = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * weight
        return out


class LayerNorm(nn.Module):
    """LayerNorm with optional affine parameters stored in any dtype."""

    def __init__(self, dim: int, affine: bool, eps: float = 1e-6):
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.weight = meta_param(dim) if affine else None
        self.bias = meta_param(dim) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (self.dim,), cast(self.weight, x.dtype), cast(self.bias, x.dtype), self.eps)


class PatchEmbed3d(nn.Module):
    """Conv3d with stride = kernel = patch, flattened to tokens in (t, h, w) order."""

    def __init__(self, in_channels: int, hidden: int, patch: tuple[int, int, int]):
        super().__init__()
        self.patch = tuple(patch)
        self.proj = nn.Module()
        self.proj.weight = meta_param(hidden, in_channels, *patch)
        self.proj.bias = meta_param(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.proj.weight.to(x.dtype), self.proj.bias.to(x.dtype)
        return F.conv3d(x, w, b, stride=self.patch).flatten(2).transpose(1, 2)

    def tokens(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Tokens start…stop of forward(x), from only the latent frames they lie in (a rank's share: the
        whole sequence's embedding never exists). Tokens are independent (stride = kernel), so they are the same."""
        pt, ph, pw = self.patch
        per_frame, frames = (x.shape[3] // ph) * (x.shape[4] // pw), x.shape[2] // pt
        first = min(start // per_frame, frames - 1)
        last = max(first + 1, -(-stop // per_frame))
        return self(x[:, :, first * pt:last * pt])[:, start - first * per_frame:stop - first * per_frame]


def timestep_embedding(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [cos | sin] of a float timestep (fp32), as Tencent's TimestepEmbedder."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    """Sinusoid → Linear → SiLU → Linear (`mlp.0`, `mlp.2`)."""

    def __init__(self, hidden: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(Linear(freq_dim, hidden), nn.SiLU(), Linear(hidden, hidden))

    def forward(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.freq_dim).to(dtype))


class MLPEmbedder(nn.Module):
    """Linear → SiLU → Linear with Tencent's `in_layer` / `out_layer` names (vector_in)."""

    def __init__(self, in_dim: int, hidden: int):
        super().__init__()
        self.in_layer = Linear(in_dim, hidden)
        self.out_layer = Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_layer(F.silu(self.in_layer(x)))


class TextProjection(nn.Module):
    """Linear → SiLU → Linear with `linear_1` / `linear_2` names (the refiner's c_embedder)."""

    def __init__(self, in_dim: int, hidden: int):
        super().__init__()
        self.linear_1 = Linear(in_dim, hidden)
        self.linear_2 = Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class MLP(nn.Module):
    """fc1 → activation → fc2."""

    def __init__(self, dim: int, hidden: int, act):
        super().__init__()
        self.fc1 = Linear(dim, hidden)
        self.fc2 = Linear(hidden, dim)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


class Modulation(nn.Module):
    """SiLU(vec) → Linear → `count` chunks of [B, 1, hidden] (Tencent's ModulateDiT, key `.linear`)."""

    def __init__(self, hidden: int, count: int):
        super().__init__()
        self.count = count
        self.linear = Linear(hidden, count * hidden)

    def forward(self, vec) -> list:
        if isinstance(vec, FirstTokens):  # token replace: the first tokens get their own values
            return [FirstTokens(f, r, vec.n) for f, r in zip(self(vec.first), self(vec.rest))]
        hidden = self.linear.out_features // self.count
        return [c.unsqueeze(1) for c in self.linear.in_row_pieces(F.silu(vec), hidden)]


class FirstTokens(NamedTuple):
    """A conditioning value that differs for the first `n` tokens of a sequence: HunyuanVideo-I2V's token
    replace modulates the clean first latent frame with t = 0 and the rest with the step's t."""
    first: torch.Tensor
    rest: torch.Tensor
    n: int


def _split_at(value, x: torch.Tensor, at: int) -> int | None:
    """Where `x` (tokens [at, at + len)) crosses `value`'s boundary, or None when one value covers it."""
    if not isinstance(value, FirstTokens):
        return None
    return min(max(value.n - at, 0), x.shape[1])


def _pick(value, first: bool):
    return (value.first if first else value.rest) if isinstance(value, FirstTokens) else value


def modulate(x: torch.Tensor, shift, scale, at: int = 0) -> torch.Tensor:
    """x·(1 + scale) + shift for tokens [at, at + len(x)) of their sequence."""
    k = _split_at(shift, x, at)
    if k is None:
        return x * (1 + scale) + shift
    if k in (0, x.shape[1]):
        return modulate(x, _pick(shift, k > 0), _pick(scale, k > 0))
    return torch.cat((modulate(x[:, :k], shift.first, scale.first), modulate(x[:, k:], shift.rest, scale.rest)), 1)


def gated(y: torch.Tensor, gate, at: int = 0) -> torch.Tensor:
    """y·gate for tokens [at, at + len(y)) of their sequence."""
    k = _split_at(gate, y, at)
    if k is None:
        return y * gate
    if k in (0, y.shape[1]):
        return y * _pick(gate, k > 0)
    return torch.cat((y[:, :k] * gate.first, y[:, k:] * gate.rest), 1)


def common(vec):
    """The value every token shares (the text stream's and the final layer's conditioning)."""
    return vec.rest if isinstance(vec, FirstTokens) else vec
