"""NaN/Inf checks between stages: a damaged file or an overflow stops the run where it happens, with an
error naming the likely causes, never as a black video after all the work."""

from __future__ import annotations

import torch

from .errors import NonFiniteError

CAUSES = ("fp16 compute overflowing (use weight_dtype auto or bf16), a damaged or incomplete model file "
          "(download it again), or a LoRA strength too high (lower it)")


def non_finite_count(t: torch.Tensor, rows: int = 8) -> int:
    """How many NaN/Inf values `t` holds, checked a few rows at a time (no whole-size mask)."""
    bad = 0
    flat = t.reshape(t.shape[0], -1) if t.dim() > 1 else t.reshape(1, -1)
    for a in range(0, flat.shape[0], rows):
        bad += int((~torch.isfinite(flat[a:a + rows])).sum())
    return bad


def check_finite(t: torch.Tensor, what: str, fix: str = CAUSES) -> torch.Tensor:
    bad = non_finite_count(t)
    if bad:
        raise NonFiniteError(f"finite values in {what}", f"{bad:,} of {t.numel():,} values are NaN or Inf",
                             f"the likely causes are {fix}")
    return t
