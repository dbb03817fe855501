"""Counters of one streamed run, printed by the CLI and the nodes."""

from __future__ import annotations

from dataclasses import asdict, dataclass

GIB = 1024 ** 3


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

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return (f"{self.blocks_resident}/{self.blocks_total} blocks resident, {self.blocks_streamed} streamed "
                f"through {self.ring_slots} slots; {self.bytes_copied / GIB:.2f} GiB copied in {self.copies} copies, "
                f"compute waited {self.wait_seconds + self.stall_seconds:.2f} s; peak device {self.peak_device_bytes / GIB:.2f} GiB"
                + (f" ({self.peak_reserved_bytes / GIB:.2f} GiB reserved)" if self.peak_reserved_bytes else ""))
