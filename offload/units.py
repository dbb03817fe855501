"""What the streamer streams: each block whole, or — for a block that can run in parts (a `parts`
attribute) — each of its parts, so a ring slot holds a part, not a block. A part is either a module that
holds some of the block's own children under their names (models/parts.py), or a (path, submodule) pair:
a submodule the block's forward calls once, at its place in `parts` (a decoder layer's projections).

Loaders, planners and step caches speak of blocks (a file's `double_blocks.3.img_mlp.fc1.weight`, "pause
after the first double block"); the streamer of units. This table translates.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from torch import nn


class StreamUnits:
    def __init__(self, blocks: Sequence[nn.Module], split: bool = True):
        self.modules: list[nn.Module] = []
        self._first: list[int] = []  # block → its first unit
        self._part_of: list[dict[str, tuple[int, str]] | None] = []  # block → {path: (part, prefix)}; None: whole
        for block in blocks:
            self._first.append(len(self.modules))
            parts = tuple(getattr(block, "parts", ())) if split else ()
            if parts:
                table = {}
                for k, part in enumerate(parts):
                    if isinstance(part, tuple):  # (path, submodule): names inside it lose the path
                        table[part[0]] = (k, part[0] + ".")
                        part = part[1]
                    else:  # holds the block's children under their own names
                        table.update((name, (k, "")) for name, _ in part.named_children())
                    self.modules.append(part)
                self._part_of.append(table)
            else:
                self.modules.append(block)
                self._part_of.append(None)
        self._first.append(len(self.modules))

    def __len__(self) -> int:
        return len(self.modules)

    def blocks(self) -> int:
        return len(self._part_of)

    def of_block(self, block: int) -> range:
        """The units block `block` streams as, in the order they run."""
        return range(self._first[block], self._first[block + 1])

    def last_of(self, block: int) -> int:
        return self._first[block + 1] - 1

    def unit_of(self, block: int, local: str) -> tuple[int, str]:
        """(unit, name inside the unit) of tensor `local` of block `block`."""
        table = self._part_of[block]
        if table is None:
            return self._first[block], local
        path = local
        while "." in path:
            path = path.rpartition(".")[0]
            if path in table:
                k, prefix = table[path]
                return self._first[block] + k, local[len(prefix):]
        raise KeyError(f"block {block}'s tensor {local!r} belongs to none of its parts: every module holding "
                       "weights must be in one of the block's parts")

    def units_of_blocks(self, blocks: Iterable[int]) -> list[int]:
        return [u for b in blocks for u in self.of_block(b)]
