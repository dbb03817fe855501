"""Counters of one streamed run, printed by the CLI and the nodes, and the ledger of the device buffers
the streamer allocates."""

from __future__ import annotations

import weakref
from dataclasses import asdict, dataclass

import torch

from ..sizes import GIB


@dataclass
class StreamStats:
    blocks_total: int = 0
    blocks_resident: int = 0
    blocks_streamed: int = 0
    ring_slots: int = 0
    bytes_copied: int = 0  # host → device (CPU: file → ring) bytes moved by the streamer
    copies: int = 0
    wait_seconds: float = 0.0  # time the compute thread waited for the worker to issue (CPU: finish) a copy
    stall_seconds: float = 0.0  # GPU: time the compute stream waited for copies, measured with events
    peak_device_bytes: int = 0  # CUDA: max_memory_allocated per session; CPU: fixed weights + the peak of our buffers alive at once
    peak_reserved_bytes: int = 0  # CUDA: max_memory_reserved per session (the allocator's cache included)
    forwards: int = 0

    def reset(self) -> None:
        keep = (self.blocks_total, self.blocks_resident, self.blocks_streamed, self.ring_slots)
        self.__init__()
        self.blocks_total, self.blocks_resident, self.blocks_streamed, self.ring_slots = keep

    def add_stalls(self, stalls) -> None:
        """(compute ready, copy done) event pairs, the host having waited for both: the GPU's wait per block."""
        for ready, done in stalls:
            self.stall_seconds += max(0.0, ready.elapsed_time(done)) / 1000.0

    def add_peaks(self, peak: int | None, reserved: int | None) -> None:
        """A session's peaks, as the device's allocator measured them (None where it does not)."""
        if peak is not None:
            self.peak_device_bytes = max(self.peak_device_bytes, peak)
            self.peak_reserved_bytes = max(self.peak_reserved_bytes, reserved)

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return (f"{self.blocks_resident}/{self.blocks_total} blocks resident, {self.blocks_streamed} streamed "
                f"through {self.ring_slots} slots; {self.bytes_copied / GIB:.2f} GiB copied in {self.copies} copies, "
                f"compute waited {self.wait_seconds + self.stall_seconds:.2f} s; peak device {self.peak_device_bytes / GIB:.2f} GiB"
                + (f" ({self.peak_reserved_bytes / GIB:.2f} GiB reserved)" if self.peak_reserved_bytes else ""))


class DeviceLedger:
    """Every device buffer the streamer allocates, held weakly (leak checks), and where the device's
    allocator does not measure itself (the CPU), the peak of those alive at once plus the fixed weights."""

    def __init__(self, backend, stats: StreamStats, fixed_bytes: int):
        self.backend, self.stats, self.fixed_bytes = backend, stats, fixed_bytes
        self._buffers: weakref.WeakSet = weakref.WeakSet()
        self._live_bytes = 0

    def alloc(self, nbytes: int) -> torch.Tensor:
        buf = self.backend.alloc(nbytes)
        self._buffers.add(buf)
        self.backend.account_allocation(self, buf, nbytes)
        return buf

    def count(self, buf: torch.Tensor, nbytes: int) -> None:
        """Count `buf` until its memory (not this view of it) is freed."""
        self._live_bytes += nbytes
        weakref.finalize(buf.untyped_storage(), self._freed, nbytes)
        self.stats.peak_device_bytes = max(self.stats.peak_device_bytes, self.fixed_bytes + self._live_bytes)

    def _freed(self, nbytes: int) -> None:
        self._live_bytes -= nbytes

    def live_buffers(self) -> list[torch.Tensor]:
        return list(self._buffers)
