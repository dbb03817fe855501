"""The `weight_dtype` rule (DESIGN): how weights are stored and in which dtype the model computes.

Storage (`weight_dtype`):
- auto: weights as in the file.
- bf16 / fp16: float weights stored in that dtype (fp8 weights stay fp8).
- fp8_e4m3fn: the blocks' Linear weights are stored as fp8 (on the fly while streaming, no file
  conversion).
Compute (`compute_dtype`, auto unless chosen): fp32 on the CPU (the host's --cpu mode must work end to
end); on a GPU the file's or storage's float dtype, bf16 for fp8 — except that
- the DiT never computes in fp16 unless asked explicitly (HunyuanVideo overflows in fp16; ComfyUI excludes
  it too): fp16 weights compute in bf16;
- bf16 becomes fp32 on GPUs before sm80 (Turing, Volta): they have no bf16 kernels, and SDPA would fall
  back to its math kernel, which builds the N×N score matrix (~21 GB per chunk at 720p); in fp32 the
  memory-efficient kernel runs.
"""

from __future__ import annotations

from collections import Counter

import torch

from ..errors import InputError
from ..models.layers import FP8_DTYPES

WEIGHT_DTYPES = ("auto", "bf16", "fp16", "fp8_e4m3fn")
COMPUTE_DTYPES = ("auto", "bf16", "fp16", "fp32")
NAMED = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp8_e4m3fn": torch.float8_e4m3fn, "fp32": torch.float32}


def check_weight_dtype(weight_dtype: str) -> str:
    if weight_dtype not in WEIGHT_DTYPES:
        raise InputError(f"weight_dtype one of {', '.join(WEIGHT_DTYPES)}", repr(weight_dtype),
                         "pick one of the listed values")
    return weight_dtype


def dominant_float_dtype(dtypes) -> torch.dtype:
    counts = Counter(d for d in dtypes if d.is_floating_point)
    return counts.most_common(1)[0][0] if counts else torch.float32


def device_has_bf16(device) -> bool:
    """Native bf16 kernels (sm80+); the CPU computes in fp32 anyway."""
    device = torch.device(device)
    if device.type != "cuda":
        return True
    return torch.cuda.get_device_capability(device) >= (8, 0)


def check_compute_dtype(compute: str) -> str:
    if compute not in COMPUTE_DTYPES:
        raise InputError(f"compute_dtype one of {', '.join(COMPUTE_DTYPES)}", repr(compute),
                         "pick one of the listed values (auto is right for almost everyone)")
    return compute


def compute_dtype(weight_dtype: str, file_dtype: torch.dtype, device: torch.device, *, compute: str = "auto",
                  fp16_ok: bool = True, has_bf16: bool | None = None) -> torch.dtype:
    """fp16_ok=False for the DiT: fp16 only when `compute` asks for it. has_bf16: the device's answer
    (default: asked of the device)."""
    if check_compute_dtype(compute) != "auto":
        return NAMED[compute]
    if torch.device(device).type == "cpu":
        return torch.float32
    if weight_dtype in ("bf16", "fp16"):
        want = NAMED[weight_dtype]
    elif weight_dtype == "fp8_e4m3fn" or file_dtype in FP8_DTYPES or not file_dtype.is_floating_point:
        want = torch.bfloat16
    else:
        want = file_dtype
    if want == torch.float16 and not fp16_ok:
        want = torch.bfloat16
    if want == torch.bfloat16 and not (device_has_bf16(device) if has_bf16 is None else has_bf16):
        want = torch.float32
    return want


def store_dtype(weight_dtype: str, file_dtype: torch.dtype, *, quantisable: bool) -> torch.dtype:
    """Storage dtype of one tensor. `quantisable`: a 2D Linear weight inside a streamed block."""
    if not file_dtype.is_floating_point or file_dtype in FP8_DTYPES:
        return file_dtype
    if weight_dtype in ("bf16", "fp16"):
        return NAMED[weight_dtype]
    if weight_dtype == "fp8_e4m3fn" and quantisable:
        return torch.float8_e4m3fn
    return file_dtype
