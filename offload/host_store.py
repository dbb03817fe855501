"""Where streamed blocks live between uses.

Tiers:
- "mapped": nothing is held; every fetch reads the block's pages from the checkpoint file (the OS page
  cache keeps hot pages, the process RSS stays at the ring). The CPU path and the low-RAM CUDA path.
- "pinned": each block packed once into page-locked RAM (filled lazily on first use, straight from the
  file: never a second full copy of the model), so host→device copies are truly asynchronous.
"""

from __future__ import annotations

import threading

import torch

from .source import BlockSource


def available_ram_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), psutil elsewhere when installed, else None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return None


def auto_host_tier(streamed_bytes: int, headroom: float = 0.75) -> str:
    """Pin the blocks when they fit comfortably in free RAM, else serve them from the mapped file
    through a small pinned staging ring (the low-RAM tier: 32 GB boxes with a 26 GB DiT)."""
    free = available_ram_bytes()
    return "pinned" if free is None or streamed_bytes <= headroom * free else "mapped"


def pinned_empty(nbytes: int) -> torch.Tensor:
    return torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)


class HostStore:
    def __init__(self, source: BlockSource, tier: str):
        if tier not in ("mapped", "pinned"):
            raise ValueError(f"host tier must be 'mapped' or 'pinned', not {tier!r}")
        self.source = source
        self.tier = tier
        self._packed: dict[int, torch.Tensor] = {}
        self._lock = threading.Lock()

    @property
    def held_bytes(self) -> int:
        return sum(b.numel() for b in self._packed.values())

    def packed(self, index: int) -> torch.Tensor:
        """The block's pinned packed buffer, filled on first use (pinned tier only)."""
        with self._lock:
            buf = self._packed.get(index)
            if buf is None:
                buf = pinned_empty(self.source.layout(index).nbytes)
                self.source.fill(index, buf)
                self._packed[index] = buf
            return buf

    def fill(self, index: int, out: torch.Tensor) -> None:
        """Write the block's packed bytes into a CPU buffer."""
        if self.tier == "pinned":
            src = self.packed(index)
            out[:src.numel()].copy_(src)
        else:
            self.source.fill(index, out)

    def release(self) -> None:
        with self._lock:
            self._packed.clear()
