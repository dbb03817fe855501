"""A block streamed as its parts: a slot of the ring then holds a part, not a whole block.

A block that can be split lists `PARTS` — groups of its own child modules, in the order its forward first
uses them — and runs each group's work through `self.parts[k](fn, *args)`. A `BlockPart` holds the same
child module objects (it is not registered on the block, so the block's parameter names do not change):
the streamer hooks the part, binds that group's weights just before `fn` runs and releases them right
after. Unstreamed (or streamed whole), a part is only a call of `fn`.
"""

from __future__ import annotations

from torch import nn


class BlockPart(nn.Module):
    def __init__(self, block: nn.Module, names: tuple[str, ...]):
        super().__init__()
        for name in names:
            self.add_module(name, getattr(block, name))

    def forward(self, fn, *args):
        return fn(*args)


class PartedBlock(nn.Module):
    """A block whose forward runs in parts (see the module docstring). Subclasses set PARTS."""

    PARTS: tuple[tuple[str, ...], ...] = ()

    @property
    def parts(self) -> tuple[BlockPart, ...]:
        parts = self.__dict__.get("_parts")
        if parts is None:  # built once, kept out of the module tree (see BlockPart)
            parts = tuple(BlockPart(self, names) for names in self.PARTS)
            self.__dict__["_parts"] = parts
        return parts
