"""The `weight_dtype` rule (DESIGN): how weights are stored and in which dtype the model computes.

- auto: weights as in the file; compute in the file's float dtype on CUDA (bf16 for fp8 files) and in
  fp32 on the CPU (the host's --cpu mode must work end to end).
- bf16 / fp16: float weights stored in that dtype (fp8 weights stay fp8); compute in it on CUDA.
- fp8_e4m3fn: the blocks' Linear weights are stored as fp8 (on the fly while streaming, no file
  conversion); compute in bf16 on CUDA.
"""

from __future__ import annotations

from collections import Counter

import torch

from ..errors import InputError
from ..models.layers import FP8_DTYPES

WEIGHT_DTYPES = ("auto", "bf16", "fp16", "fp8_e4m3fn")
NAMED = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp8_e4m3fn": torch.float8_e4m3fn}


def check_weight_dtype(weight_dtype: str) -> str:
    if weight_dtype not in WEIGHT_DTYPES:
        raise InputError(f"weight_dtype one of {', '.join(WEIGHT_DTYPES)}", repr(weight_dtype),
                         "pick one of the listed values")
    return weight_dtype


def dominant_float_dtype(dtypes) -> torch.dtype:
    counts = Counter(d for d in dtypes if d.is_floating_point)
    return counts.most_common(1)[0][0] if counts else torch.float32


def compute_dtype(weight_dtype: str, file_dtype: torch.dtype, device: torch.device) -> torch.dtype:
    if torch.device(device).type == "cpu":
        return torch.float32
    if weight_dtype in ("bf16", "fp16"):
        return NAMED[weight_dtype]
    if weight_dtype == "fp8_e4m3fn" or file_dtype in FP8_DTYPES:
        return torch.bfloat16
    return file_dtype


def store_dtype(weight_dtype: str, file_dtype: torch.dtype, *, quantisable: bool) -> torch.dtype:
    """Storage dtype of one tensor. `quantisable`: a 2D Linear weight inside a streamed block."""
    if not file_dtype.is_floating_point or file_dtype in FP8_DTYPES:
        return file_dtype
    if weight_dtype in ("bf16", "fp16"):
        return NAMED[weight_dtype]
    if weight_dtype == "fp8_e4m3fn" and quantisable:
        return torch.float8_e4m3fn
    return file_dtype
