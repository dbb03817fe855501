"""A model file read only by positioned reads: thread-safe (the streamer's worker and the loader read at
once), no whole-file mapping, no seek state. Windows has no os.preadv: there seek+read run under a lock.
Shared by the safetensors and GGUF readers."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import torch


class PositionedFile:
    def __init__(self, path: str, short_read: Callable[[str], Exception]):
        """short_read(found) → the error to raise when the file ends before the bytes asked for."""
        self.path = path
        self._short_read = short_read
        self._lock = threading.Lock()
        self._fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))

    def read_into(self, offset: int, view: memoryview) -> None:
        done, total = 0, len(view)
        while done < total:
            if hasattr(os, "preadv"):
                n = os.preadv(self._fd, [view[done:]], offset + done)
            else:  # Windows: no positioned read, so serialise seek+read
                with self._lock:
                    os.lseek(self._fd, offset + done, os.SEEK_SET)
                    chunk = os.read(self._fd, total - done)
                    n = len(chunk)
                    view[done:done + n] = chunk
            if n <= 0:
                raise self._short_read(f"end of file at byte {offset + done:,} while reading")
            done += n

    def read_tensor_into(self, name: str, offset: int, nbytes: int, out: torch.Tensor) -> None:
        """`nbytes` at `offset` straight into `out`, a contiguous CPU uint8 tensor of exactly that size."""
        if out.dtype != torch.uint8 or out.device.type != "cpu" or not out.is_contiguous() or out.numel() != nbytes:
            raise ValueError(f"read_into({name!r}) needs a contiguous CPU uint8 tensor of {nbytes} bytes")
        if nbytes:
            self.read_into(offset, memoryview(out.numpy()).cast("B"))

    def read_rows(self, name: str, offset: int, shape: tuple, nbytes: int, rows: list[int]) -> torch.Tensor:
        """Rows of a 2D tensor stored at `offset` (an embedding table) without reading the rest, as bytes
        [len(rows), row_bytes]."""
        if len(shape) != 2:
            raise ValueError(f"read_rows({name!r}) needs a 2D tensor, not {list(shape)}")
        row_bytes = nbytes // shape[0]
        out = torch.empty(len(rows), row_bytes, dtype=torch.uint8)
        view = memoryview(out.numpy()).cast("B")
        for i, r in enumerate(rows):
            if not 0 <= r < shape[0]:
                raise IndexError(f"row {r} of {name!r} (which has {shape[0]} rows)")
            self.read_into(offset + r * row_bytes, view[i * row_bytes:(i + 1) * row_bytes])
        return out

    def close(self) -> None:
        fd, self._fd = getattr(self, "_fd", -1), -1  # forget the number: never close a reused descriptor
        if fd >= 0:
            os.close(fd)

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001, S110 - a finalizer never raises (at exit even `os` may be gone)
            pass
