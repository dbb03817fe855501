"""Blocks converted on the way (a bf16 file streamed as fp8), kept converted in an unlinked scratch file
when RAM is short: they are converted once, and later copies read the converted bytes back through the
OS page cache, which gives the memory back under pressure instead of growing the process.

Exactly the low-RAM machines that choose the mapped tier used to convert every block again on every copy.
The scratch file lives in HYSTREAM_SPILL_DIR or the system temp folder, never on a RAM-backed file system
(tmpfs would only move the RAM it should save), and only while that disk has room.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading

import torch

DISK_HEADROOM = 1 << 30  # never fill the scratch disk closer than this
RAM_FILESYSTEMS = ("tmpfs", "ramfs")


def spill_dir() -> str:
    return os.environ.get("HYSTREAM_SPILL_DIR") or tempfile.gettempdir()


def filesystem_type(path: str) -> str | None:
    """The type of the file system holding `path` (from /proc/mounts; None where unknown)."""
    try:
        with open("/proc/mounts") as f:
            mounts = [line.split()[1:3] for line in f if len(line.split()) > 2]
    except OSError:
        return None
    real = os.path.realpath(path)
    best = max((m for m in mounts if real == m[0] or real.startswith(m[0].rstrip("/") + "/")),
               key=lambda m: len(m[0]), default=None)
    return best[1] if best else None


class SpillFile:
    """Converted blocks appended to one scratch file (unlinked at creation: gone with the process)."""

    def __init__(self, folder: str | None = None):
        self.folder = folder or spill_dir()
        self._file = None
        self._where: dict[int, tuple[int, int]] = {}  # block → (offset, bytes)
        self._end = 0
        self._lock = threading.Lock()
        self.usable = filesystem_type(self.folder) not in RAM_FILESYSTEMS and os.path.isdir(self.folder)

    def holds(self, index: int) -> bool:
        return index in self._where

    def room_for(self, nbytes: int) -> bool:
        if not self.usable:
            return False
        try:
            return shutil.disk_usage(self.folder).free - nbytes > DISK_HEADROOM
        except OSError:
            return False

    def write(self, index: int, data: torch.Tensor) -> None:
        view = memoryview(data.numpy()).cast("B")
        with self._lock:
            if self._file is None:
                # kept open for the spill's lifetime; close() closes it
                self._file = tempfile.TemporaryFile(dir=self.folder, prefix="hystream-converted-")  # noqa: SIM115
            offset = self._end
            self._file.seek(offset)
            self._file.write(view)
            self._file.flush()
            self._end += len(view)
            self._where[index] = (offset, len(view))

    def read_into(self, index: int, out: torch.Tensor) -> None:
        offset, nbytes = self._where[index]
        view = memoryview(out[:nbytes].numpy()).cast("B")
        with self._lock:  # one file position: reads are serialised (they are page-cache copies)
            self._file.seek(offset)
            got = self._file.readinto(view)
        if got != nbytes:
            raise OSError(f"the converted-block scratch file returned {got} of {nbytes} bytes")

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
            self._file, self._where, self._end = None, {}, 0
