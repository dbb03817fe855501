"""Where streamed blocks live between uses.

Tiers:
- "mapped": nothing is held; every fetch reads the block's pages from the checkpoint file (the OS page
  cache keeps hot pages, the process RSS stays at the ring). The CPU path and the low-RAM CUDA path.
  Blocks whose filling computes something (a bf16 file streamed as fp8) are converted once and kept in
  ordinary memory while the RAM left allows, instead of being converted again for every copy.
- "pinned": blocks packed into page-locked arenas (consecutive blocks, about ARENA_BYTES each, locked at
  their exact size), each block filled lazily on first use straight from the file: never a second full
  copy of the model, and the locked bytes are the weights' bytes (plus page alignment). When the system
  refuses to lock more memory, the blocks not yet held are served as in the mapped tier instead. Blocks
  kept resident on the device need no page-locked copy: their arenas are released (`drop`) and refilled
  from the file if they stream again, so a fully resident model locks nothing.
Blocks converted on the way are converted once: kept in RAM while at least KEEP_FREE stays free, else
written converted to a scratch file (spill.py) whose pages the OS may drop under pressure.
"""

from __future__ import annotations

import threading

import torch

from .host_buffer import PAGE, PinnedBuffer
from .host_memory import available_ram_bytes
from .source import BlockSource
from .spill import SpillFile

ARENA_BYTES = 1 << 30  # blocks are grouped into page-locked arenas of about this size
LOCK_SHARE = 0.8  # never lock an arena that would take more than this share of the RAM left
KEEP_FREE = 2 << 30  # converted blocks are cached only while at least this much RAM stays free


def arena_plan(sizes: list[int], arena_bytes: int | None = None) -> list[tuple[int, int]]:
    """(arena, offset) of each block: consecutive blocks fill an arena up to about `arena_bytes` (default
    ARENA_BYTES); every block starts on a page boundary."""
    arena_bytes = arena_bytes or ARENA_BYTES
    where, arena, offset = [], 0, 0
    for n in sizes:
        if offset and offset + n > arena_bytes:
            arena, offset = arena + 1, 0
        where.append((arena, offset))
        offset += -(-n // PAGE) * PAGE
    return where


def pinned_bytes(sizes: list[int], arena_bytes: int | None = None) -> int:
    """What the pinned tier locks for blocks of these sizes: the real figure the tier choice must use."""
    where = arena_plan(sizes, arena_bytes)
    ends: dict[int, int] = {}
    for (arena, offset), n in zip(where, sizes):
        ends[arena] = max(ends.get(arena, 0), offset + n)
    return sum(ends.values())


def ram_left(reserve: int = 0) -> int | None:
    """RAM we may take: what the system (container limits included) has left, minus `reserve` (what the
    host may still page-lock for its own models)."""
    free = available_ram_bytes()
    return None if free is None else max(0, free - reserve)


def auto_host_tier(pinned_total: int, headroom: float = 0.75, available: int | None = None, reserve: int = 0) -> str:
    """Pin the blocks when their locked size fits comfortably in the RAM left, else serve them from the
    mapped file through a small pinned staging ring (the low-RAM tier: 32 GB boxes with a 26 GB DiT)."""
    free = ram_left(reserve) if available is None else available
    return "pinned" if free is None or pinned_total <= headroom * free else "mapped"


class HostStore:
    def __init__(self, source: BlockSource, tier: str, backend, ram_reserve: int = 0):
        if tier not in ("mapped", "pinned"):
            raise ValueError(f"host tier must be 'mapped' or 'pinned', not {tier!r}")
        self.source = source
        self.tier = tier
        self.backend = backend
        self.ram_reserve = ram_reserve  # RAM the host may still lock for itself: never ours to take
        sizes = [source.layout(i).nbytes for i in range(len(source))]
        self._sizes = sizes
        self._where = arena_plan(sizes)
        self._arena_size: dict[int, int] = {}
        for (arena, offset), n in zip(self._where, sizes):
            self._arena_size[arena] = max(self._arena_size.get(arena, 0), offset + n)
        self._arenas: dict[int, PinnedBuffer] = {}
        self._filled: set[int] = set()
        self._refused = False  # the system would not lock more memory: the rest is served from the file
        self._converted: dict[int, torch.Tensor] = {}  # mapped tier: blocks converted once, ordinary memory
        self._spill = SpillFile()  # ...or in a scratch file when RAM is short
        self._lock = threading.Lock()

    @property
    def held_bytes(self) -> int:
        """Page-locked bytes held now."""
        return sum(a.nbytes for a in self._arenas.values())

    def packed(self, index: int) -> torch.Tensor | None:
        """The block's page-locked bytes, filled on first use; None when it is not held (mapped tier, or
        locking more memory was refused): then the caller reads it from the file."""
        if self.tier != "pinned":
            return None
        with self._lock:
            arena, offset = self._where[index]
            buf = self._arenas.get(arena)
            if buf is None:
                free = ram_left(self.ram_reserve)  # re-checked now: the host (or another model) may have taken RAM since
                if self._refused or (free is not None and self._arena_size[arena] > LOCK_SHARE * free):
                    self._refused = True
                    return None
                buf = self.backend.alloc_pinned(self._arena_size[arena])
                if buf is None:
                    self._refused = True
                    return None
                self._arenas[arena] = buf
            view = buf.tensor[offset:offset + self._sizes[index]]
            if index not in self._filled:
                self.backend.host_write(view)
                self.source.fill(index, view)
                self._filled.add(index)
            return view

    def held(self, index: int) -> torch.Tensor | None:
        """The block's page-locked copy if one is filled already; never locks or reads anything."""
        with self._lock:
            if index not in self._filled:
                return None
            arena, offset = self._where[index]
            return self._arenas[arena].tensor[offset:offset + self._sizes[index]]

    def drop(self, indices) -> None:
        """Release the arenas all of whose blocks are in `indices` (kept resident on the device): a block
        that streams again later is read from the file into a fresh arena."""
        keep = set(indices)
        with self._lock:
            for arena in list(self._arenas):
                members = [i for i, (a, _) in enumerate(self._where) if a == arena]
                if all(i in keep for i in members):
                    self._arenas.pop(arena).release()
                    self._filled.difference_update(members)

    def fill(self, index: int, out: torch.Tensor) -> None:
        """Write the block's packed bytes into a host buffer (from its page-locked copy if one is held;
        never locking memory for it)."""
        src = self.held(index)
        if src is None:
            src = self._converted_block(index)
        if src is not None:
            out[:src.numel()].copy_(src)
        elif not self._spilled(index, out):
            self.source.fill(index, out)

    def _converted_block(self, index: int) -> torch.Tensor | None:
        """A block whose filling converts dtypes, converted once and kept (mapped tier, RAM allowing)."""
        if not self.source.computed(index):
            return None
        with self._lock:
            kept = self._converted.get(index)
            if kept is None:
                free = ram_left(self.ram_reserve)
                if free is not None and free - self._sizes[index] < KEEP_FREE:
                    return None  # RAM is short: the scratch file keeps it instead (_spilled)
                kept = torch.empty(self._sizes[index], dtype=torch.uint8)
                self.source.fill(index, kept)
                self._converted[index] = kept
            return kept

    def _spilled(self, index: int, out: torch.Tensor) -> bool:
        """Serve a converted block from the scratch file, converting and writing it there on first use.
        False when the block converts nothing, or the scratch disk has no room (then it converts again)."""
        if not self.source.computed(index):
            return False
        if not self._spill.holds(index):
            if not self._spill.room_for(self._sizes[index]):
                return False
            self.source.fill(index, out)
            self._spill.write(index, out[:self._sizes[index]])
            return True
        self._spill.read_into(index, out)
        return True

    def host_tensors(self) -> list[torch.Tensor]:
        """The host memory this store holds (page-locked arenas, converted blocks): what it costs in RAM."""
        return [a.tensor for a in self._arenas.values() if a.tensor is not None] + list(self._converted.values())

    def release(self) -> None:
        """Unlock and free every arena: the memory goes back to the OS, not to a pinned pool."""
        with self._lock:
            for buf in self._arenas.values():
                buf.release()
            self._arenas.clear()
            self._filled.clear()
            self._converted.clear()
        self._spill.close()
