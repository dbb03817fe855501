"""One check for every loader: the checkpoint's tensors against what the model expects."""

from __future__ import annotations

import math

from torch import nn

from ..errors import StateDictError, list_some
from ..models.layers import Linear
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
