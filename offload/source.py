"""What the engine streams from: a `BlockSource` knows each block's packed layout and can write a
block's packed bytes into a CPU buffer (from a file, a state dict, anything)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch

from .packing import BlockLayout


class BlockSource(Protocol):
    def __len__(self) -> int: ...

    def layout(self, index: int) -> BlockLayout: ...

    def fill(self, index: int, out: torch.Tensor) -> None:
        """Write block `index`'s packed bytes into `out` (contiguous CPU uint8, at least layout.nbytes)."""

    def computed(self, index: int) -> bool:
        """True when filling the block computes something (a dtype conversion), not only reads bytes."""


# One tensor's loader: writes the tensor's bytes (already in its store dtype) into a uint8 view. A filler
# with a true `computed` attribute converts on the way (e.g. bf16 → fp8) instead of copying bytes.
TensorFiller = Callable[[torch.Tensor], None]


class PackedSource:
    """A BlockSource made of per-tensor fillers: the loaders describe each block as
    [(name, store dtype, shape, filler)] and this class packs them."""

    def __init__(self, blocks: Sequence[Sequence[tuple[str, torch.dtype, tuple[int, ...], TensorFiller]]]):
        self._fillers = [{name: f for name, _, _, f in entries} for entries in blocks]
        self._layouts = [BlockLayout.build([(n, d, s) for n, d, s, _ in entries]) for entries in blocks]

    def __len__(self) -> int:
        return len(self._layouts)

    def layout(self, index: int) -> BlockLayout:
        return self._layouts[index]

    def fill(self, index: int, out: torch.Tensor) -> None:
        fillers = self._fillers[index]
        for slot in self._layouts[index].slots:
            if slot.nbytes:
                fillers[slot.name](out[slot.offset:slot.offset + slot.nbytes])

    def computed(self, index: int) -> bool:
        return any(getattr(f, "computed", False) for f in self._fillers[index].values())


class StateDictSource:
    """A BlockSource over tensors already in memory (tests, models built in code)."""

    def __init__(self, blocks: Sequence[dict[str, torch.Tensor]]):
        self._tensors = [{k: v.detach().contiguous().cpu() for k, v in b.items()} for b in blocks]
        self._layouts = [BlockLayout.build([(k, v.dtype, tuple(v.shape)) for k, v in b.items()]) for b in self._tensors]

    def __len__(self) -> int:
        return len(self._layouts)

    def layout(self, index: int) -> BlockLayout:
        return self._layouts[index]

    def computed(self, index: int) -> bool:
        return False

    def fill(self, index: int, out: torch.Tensor) -> None:
        tensors = self._tensors[index]
        for slot in self._layouts[index].slots:
            if slot.nbytes:
                out[slot.offset:slot.offset + slot.nbytes].copy_(tensors[slot.name].reshape(-1).view(torch.uint8))
