"""One check for every loader: the checkpoint's tensors against what the model expects."""

from __future__ import annotations

import math

from torch import nn

from ..errors import StateDictError, list_some
from ..models.layers import FP8_DTYPES, Linear
from .tensor_source import Meta


def scale_names(model: nn.Module, names) -> set[str]:
    """`X.scale_weight` entries whose X is one of our Linears (Comfy scaled fp8)."""
    linears = {n for n, m in model.named_modules() if isinstance(m, Linear)}
    return {n for n in names if n.endswith(".scale_weight") and n[: -len(".scale_weight")] in linears}


def check_tensors(expected: dict[str, tuple[int, ...]], found: dict[str, Meta], *, optional: set[str] = frozenset(),
                  unused=(), describe: str, what: str) -> None:
    """Raise StateDictError naming missing, unexpected and mis-shaped tensors (a few of each)."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected) - set(optional)) + list(unused)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing tensors ({list_some(missing, 4)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors ({list_some(unexpected, 4)})")
        raise StateDictError(f"every tensor of {what} and nothing else", f"{'; '.join(parts)} in {describe}",
                             "the file is incomplete or belongs to another model variant; use an official release file")
    wrong = [f"{n}: file {list(found[n].shape)}, model {list(s)}" for n, s in expected.items() if tuple(found[n].shape) != tuple(s)]
    wrong += [f"{n}: file {list(found[n].shape)}, expected one value" for n in optional
              if n in found and n.endswith(".scale_weight") and math.prod(found[n].shape) != 1]
    if wrong:
        raise StateDictError("tensor shapes consistent with the config read from the file",
                             f"{len(wrong)} contradicting shapes ({list_some(wrong, 3)}) in {describe}",
                             "the file mixes tensors of different models; download it again")


def check_fp8_scales(found: dict[str, Meta], *, marker: bool, describe: str, what: str) -> None:
    """A Comfy `scaled_fp8` file (its `scaled_fp8` marker, or any `X.scale_weight`) must carry a scale for
    every fp8 matrix: without it the weights would be used ×1, a silently wrong model. Plain fp8 files
    (no marker, no scales at all, e.g. kijai's e4m3fn) are real = stored and need none."""
    scales = {n for n in found if n.endswith(".scale_weight")}
    if not (marker or scales):
        return
    fp8 = [n for n, m in found.items() if n.endswith(".weight") and len(m.shape) == 2 and m.dtype in FP8_DTYPES]
    missing = sorted(n[: -len("weight")] + "scale_weight" for n in fp8 if n[: -len("weight")] + "scale_weight" not in scales)
    if missing:
        raise StateDictError(f"a scale_weight for every fp8 weight of {what} (a Comfy scaled_fp8 file)",
                             f"{len(missing)} of {len(fp8)} scales missing ({list_some(missing, 3)}) in {describe}",
                             "the file is damaged or was edited: download the scaled_fp8 release again, or use the "
                             "fp16/bf16 file")


def key_prefix(keys, anchor: str) -> str | None:
    """The shortest prefix under which `anchor` appears among `keys` (e.g. "model." for a Llama inside
    "model.layers.0.…"), or None."""
    hits = [k[: -len(anchor)] for k in keys if k.endswith(anchor)]
    return min(hits, key=len) if hits else None
