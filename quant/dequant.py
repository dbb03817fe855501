"""Decode GGUF-quantised rows to float32, in torch, on whatever device the bytes are (the compute device:
quantised weights cross the bus as stored and are decoded where they are used).

Each function takes the blocks as a uint8 tensor [n, type_size] and returns [n, block_size] float32,
computed in the same order of operations as ggml's reference dequantisation, so the values are exactly
those of the gguf package's `quants.dequantize`.
"""

from __future__ import annotations

import torch

from .kinds import QuantKind


def _f16(blocks: torch.Tensor, start: int) -> torch.Tensor:
    """The fp16 field at byte `start` of each block, as float32 [n, 1]."""
    return blocks[:, start:start + 2].contiguous().view(torch.float16).float()


def _nibbles(qs: torch.Tensor) -> torch.Tensor:
    """Bytes [n, k] → their low nibbles then their high nibbles [n, 2k] (ggml's order in a 32-block)."""
    return torch.cat((qs & 0x0F, qs >> 4), dim=1)


def _bits(b: torch.Tensor, count: int) -> torch.Tensor:
    """Little-endian bit field from bytes [n, count / 8] → [n, count] of 0/1 (uint8)."""
    shifts = torch.arange(8, device=b.device, dtype=torch.uint8)
    return ((b.unsqueeze(-1) >> shifts) & 1).reshape(b.shape[0], count)


def q8_0(blocks):
    d = _f16(blocks, 0)
    return blocks[:, 2:34].contiguous().view(torch.int8).float().mul_(d)  # in place: one float32 copy of the slab


def q4_0(blocks):
    d = _f16(blocks, 0)
    return (_nibbles(blocks[:, 2:18]).float() - 8) * d


def q4_1(blocks):
    d, m = _f16(blocks, 0), _f16(blocks, 2)
    return _nibbles(blocks[:, 4:20]).float() * d + m


def q5_0(blocks):
    d = _f16(blocks, 0)
    q = _nibbles(blocks[:, 6:22]) | (_bits(blocks[:, 2:6], 32) << 4)
    return (q.float() - 16) * d


def q5_1(blocks):
    d, m = _f16(blocks, 0), _f16(blocks, 2)
    q = _nibbles(blocks[:, 8:24]) | (_bits(blocks[:, 4:8], 32) << 4)
    return q.float() * d + m


def _two_bit_groups(qs: torch.Tensor) -> torch.Tensor:
    """qs [n, 64] → 2-bit values [n, 256] in ggml's Q2_K/Q3_K order: per 128-half, per shift (0, 2, 4, 6),
    the 32 bytes of that half."""
    halves = qs.reshape(-1, 2, 1, 32)
    shifts = torch.arange(0, 8, 2, device=qs.device, dtype=torch.uint8).reshape(1, 1, 4, 1)
    return ((halves >> shifts) & 3).reshape(-1, 256)


def q2_k(blocks):
    scales = blocks[:, 0:16]
    d, dmin = _f16(blocks, 80), _f16(blocks, 82)
    q = _two_bit_groups(blocks[:, 16:80]).float().reshape(-1, 16, 16)  # 16 sub-blocks of 16
    dl = (d * (scales & 0x0F).float()).unsqueeze(-1)
    ml = (dmin * (scales >> 4).float()).unsqueeze(-1)
    return (dl * q - ml).reshape(-1, 256)


def _q3_k_scales(s: torch.Tensor) -> torch.Tensor:
    """The 16 6-bit scales packed in 12 bytes (low 4 bits in bytes 0-7, high 2 bits in bytes 8-11)."""
    low, high = s[:, 0:8], s[:, 8:12]
    parts = [(low[:, 0:4] & 0x0F) | (((high >> 0) & 3) << 4), (low[:, 4:8] & 0x0F) | (((high >> 2) & 3) << 4),
             (low[:, 0:4] >> 4) | (((high >> 4) & 3) << 4), (low[:, 4:8] >> 4) | (((high >> 6) & 3) << 4)]
    return torch.cat(parts, dim=1).to(torch.int8).float() - 32


def q3_k(blocks):
    hmask, qs, d = blocks[:, 0:32], blocks[:, 32:96], _f16(blocks, 108)
    scales = _q3_k_scales(blocks[:, 96:108])
    q = _two_bit_groups(qs).to(torch.int16)
    # the high bit: bit (half × 4 + shift index) of hmask[l], for l the position within the 32 bytes
    bit = torch.arange(8, device=blocks.device, dtype=torch.uint8).reshape(1, 2, 4, 1)
    high = ((hmask.reshape(-1, 1, 1, 32) >> bit) & 1).reshape(-1, 256).to(torch.int16)
    q = (q - 4 * (1 - high)).float().reshape(-1, 16, 16)
    return ((d * scales).unsqueeze(-1) * q).reshape(-1, 256)


def _k4_scales_mins(s: torch.Tensor):
    """Q4_K / Q5_K: 8 6-bit scales and 8 6-bit mins packed in 12 bytes (ggml's get_scale_min_k4)."""
    sc_low, mn_low = s[:, 0:4] & 63, s[:, 4:8] & 63
    sc_high = (s[:, 8:12] & 0x0F) | ((s[:, 0:4] >> 6) << 4)
    mn_high = (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)
    return torch.cat((sc_low, sc_high), 1).float(), torch.cat((mn_low, mn_high), 1).float()


def q4_k(blocks):
    d, dmin = _f16(blocks, 0), _f16(blocks, 2)
    sc, mn = _k4_scales_mins(blocks[:, 4:16])
    qs = blocks[:, 16:144].reshape(-1, 4, 32)
    q = torch.stack((qs & 0x0F, qs >> 4), dim=2).reshape(-1, 8, 32).float()  # sub-block 2i: low, 2i+1: high
    return ((d * sc).unsqueeze(-1) * q - (dmin * mn).unsqueeze(-1)).reshape(-1, 256)


def q5_k(blocks):
    d, dmin = _f16(blocks, 0), _f16(blocks, 2)
    sc, mn = _k4_scales_mins(blocks[:, 4:16])
    qh, qs = blocks[:, 16:48], blocks[:, 48:176].reshape(-1, 4, 32)
    low = torch.stack((qs & 0x0F, qs >> 4), dim=2).reshape(-1, 8, 32)
    bit = torch.arange(8, device=blocks.device, dtype=torch.uint8).reshape(1, 8, 1)
    high = (qh.reshape(-1, 1, 32) >> bit) & 1  # sub-block s takes bit s of qh[l]
    q = (low | (high << 4)).float()
    return ((d * sc).unsqueeze(-1) * q - (dmin * mn).unsqueeze(-1)).reshape(-1, 256)


def q6_k(blocks):
    ql, qh = blocks[:, 0:128].reshape(-1, 2, 64), blocks[:, 128:192].reshape(-1, 2, 32)
    scales = blocks[:, 192:208].contiguous().view(torch.int8).float().reshape(-1, 2, 8)
    d = _f16(blocks, 208)
    lo = torch.stack((ql[:, :, 0:32] & 0x0F, ql[:, :, 32:64] & 0x0F, ql[:, :, 0:32] >> 4, ql[:, :, 32:64] >> 4), 2)
    shifts = torch.arange(0, 8, 2, device=blocks.device, dtype=torch.uint8).reshape(1, 1, 4, 1)
    hi = (qh.unsqueeze(2) >> shifts) & 3
    q = ((lo | (hi << 4)).to(torch.int16) - 32).float()  # [n, 2 halves, 4 quarters, 32]
    # value l of quarter j in a half uses scale (l // 16) + 2j of that half
    sc = scales.reshape(-1, 2, 4, 2, 1)
    y = (d.reshape(-1, 1, 1, 1, 1) * sc) * q.reshape(-1, 2, 4, 2, 16)
    return y.reshape(-1, 256)


DECODERS = {"Q8_0": q8_0, "Q4_0": q4_0, "Q4_1": q4_1, "Q5_0": q5_0, "Q5_1": q5_1, "Q2_K": q2_k, "Q3_K": q3_k,
            "Q4_K": q4_k, "Q5_K": q5_k, "Q6_K": q6_k}


# Values decoded at a time. On the CPU the slab keeps the temporaries (~5 float32 copies of the slab) a
# few tens of MB of RAM; on a GPU each slab costs 15-65 small kernel launches, so slabs are twice as large
# there: a 3072 × 12288 weight decodes in 5 slabs instead of 9, for ~160 MB of temporaries (counted by the
# memory estimate, which runs this code on fake tensors of the device's type) — larger slabs would cost a
# 4 GB card more than the launches they save.
SLAB_VALUES = {"cpu": 1 << 22, "cuda": 1 << 23}


def slab_values(device: torch.device) -> int:
    return SLAB_VALUES.get(device.type, SLAB_VALUES["cuda"])


def dequantize(data: torch.Tensor, kind: QuantKind, cols: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Rows of a quantised matrix (uint8 [rows, row_bytes], any device) → `dtype` [rows, cols]. Large
    matrices are decoded a slab of rows at a time into the output, so decoding a 21504 × 3072 weight
    costs its output plus a few MB, not five float32 copies of it."""
    rows = data.shape[0] if data.dim() > 1 else 1
    data = data.reshape(rows, -1)
    decode = DECODERS[kind.name]
    step = max(1, slab_values(data.device) // max(cols, 1))
    if rows <= step:
        return decode(data.reshape(-1, kind.type_size)).reshape(rows, cols).to(dtype)
    step = -(-rows // -(-rows // step))  # as many slabs, of equal size: the temporaries of the smallest slab size
    out = torch.empty(rows, cols, dtype=dtype, device=data.device)
    for a in range(0, rows, step):
        part = data[a:a + step]
        out[a:a + part.shape[0]] = decode(part.reshape(-1, kind.type_size)).reshape(part.shape[0], cols)
    return out
