"""One block's tensors packed into one contiguous byte buffer.

Tensors are grouped by dtype (each dtype's tensors are one contiguous run) and aligned, so a whole block
moves in a single copy and every tensor is a zero-copy view of the buffer once it has arrived.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ALIGN = 256  # bytes; keeps every view aligned for vectorised kernels and any dtype


def element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


@dataclass(frozen=True)
class TensorSlot:
    name: str  # path inside the block module, e.g. "img_attn_qkv.weight"
    dtype: torch.dtype
    shape: tuple[int, ...]
    offset: int
    nbytes: int


@dataclass(frozen=True)
class BlockLayout:
    slots: tuple[TensorSlot, ...]
    nbytes: int

    @classmethod
    def build(cls, entries: list[tuple[str, torch.dtype, tuple[int, ...]]]) -> BlockLayout:
        dtype_order: list[torch.dtype] = []
        for _, dtype, _ in entries:
            if dtype not in dtype_order:
                dtype_order.append(dtype)
        slots, offset = [], 0
        for dtype in dtype_order:
            for name, dt, shape in entries:
                if dt != dtype:
                    continue
                n = element_size(dt)
                for s in shape:
                    n *= s
                slots.append(TensorSlot(name, dt, tuple(shape), offset, n))
                offset += -(-n // ALIGN) * ALIGN
        return cls(tuple(slots), offset)

    def views(self, buf: torch.Tensor) -> dict[str, torch.Tensor]:
        """Name → tensor view into `buf` (a uint8 tensor of at least `nbytes`, any device)."""
        out = {}
        for s in self.slots:
            raw = buf[s.offset:s.offset + s.nbytes]
            out[s.name] = raw.view(s.dtype).view(s.shape) if s.nbytes else torch.empty(s.shape, dtype=s.dtype, device=buf.device)
        return out
