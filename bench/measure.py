"""Shared measuring helpers for the benchmark scripts (peak RSS windows, allocator trimming, timing)."""

from __future__ import annotations

import ctypes
import gc
import os
import statistics
import time

import torch

GIB = 1024 ** 3


def trim() -> None:
    """Give freed heap memory back to the OS so the next RSS window starts clean."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


class PeakRSS:
    """Peak resident set size (mapped file pages included) inside a `with` block, Linux VmHWM based."""

    def __enter__(self):
        trim()
        self.ok = os.path.exists("/proc/self/clear_refs")
        if self.ok:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        self.start = self._read("VmRSS")
        return self

    def __exit__(self, *exc):
        self.peak = self._read("VmHWM") if self.ok else self._read("VmRSS")
        return False

    @staticmethod
    def _read(field: str) -> int:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0


def sync(device: torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def median(xs) -> float:
    return statistics.median(xs)


def drop_page_cache(path: str) -> bool:
    """Evict the file's pages from the OS page cache (posix_fadvise DONTNEED), so the next reads come from
    the disk: the cold-cache case of a first run. False where the platform cannot."""
    if not hasattr(os, "posix_fadvise"):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return True
    finally:
        os.close(fd)
