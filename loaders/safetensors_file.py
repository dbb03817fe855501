"""Lazy safetensors reading: the header first, then one tensor's bytes at a time.

`safetensors.safe_open` maps the whole file copy-on-write, which Linux refuses for a file larger than
RAM + swap, and it counts the mapped pages in the process RSS. We parse the header ourselves and read
each tensor with positioned reads (`os.preadv`) straight into the caller's buffer, so a 26 GB DiT can be
opened on a 24 GB machine and host memory holds only what the caller keeps.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass

import torch

from ..errors import CorruptFileError, NotFoundError
from .positioned_file import PositionedFile

DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
MAX_HEADER_BYTES = 100 * 1024 * 1024  # the format's own limit


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    offset: int  # absolute byte offset in the file
    nbytes: int


def element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


class SafetensorsFile:
    """One .safetensors file, opened lazily. Thread-safe: reads are positioned, never seek+read."""

    def __init__(self, path: str):
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise NotFoundError("an existing .safetensors file", f"no file at {self.path!r}",
                                "check the path or the file name picked in the node")
        self.size = os.path.getsize(self.path)
        self._file = PositionedFile(self.path, self._corrupt)
        try:
            self.tensors, self.metadata = self._parse_header()
        except BaseException:
            self.close()  # and forget the number: __del__ must not close a reused descriptor
            raise

    # -- header ---------------------------------------------------------------------------------
    def _corrupt(self, found: str) -> CorruptFileError:
        return CorruptFileError(
            "a complete safetensors file (8-byte header length, JSON header, tensor data)",
            f"{found} in {self.path!r} ({self.size:,} bytes)",
            "the download or copy was probably cut short; download the file again and compare its size",
        )

    def _parse_header(self):
        if self.size < 8:
            raise self._corrupt("a file too short to hold a header")
        (header_len,) = struct.unpack("<Q", self._pread(0, 8))
        if header_len <= 1 or header_len > MAX_HEADER_BYTES or 8 + header_len > self.size:
            raise self._corrupt(f"a header length of {header_len:,} bytes")
        try:
            header = json.loads(self._pread(8, header_len).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise self._corrupt(f"a header that is not valid JSON ({e})") from None
        if not isinstance(header, dict):
            raise self._corrupt("a header that is not a JSON object")
        metadata = header.pop("__metadata__", None) or {}
        data_start = 8 + header_len
        tensors: dict[str, TensorInfo] = {}
        for name, entry in header.items():
            try:
                dtype = DTYPES[entry["dtype"]]
                shape = tuple(int(s) for s in entry["shape"])
                begin, end = (int(o) for o in entry["data_offsets"])
            except KeyError as e:
                if str(e).strip("'") in {"dtype", "shape", "data_offsets"}:
                    raise self._corrupt(f"tensor {name!r} without {e}") from None
                raise self._corrupt(f"tensor {name!r} with unsupported dtype {entry.get('dtype')!r}") from None
            except (TypeError, ValueError):
                raise self._corrupt(f"tensor {name!r} with a malformed entry {entry!r}") from None
            nbytes = math.prod(shape) * element_size(dtype)
            if end - begin != nbytes or begin < 0:
                raise self._corrupt(f"tensor {name!r} whose byte range {begin}..{end} does not match "
                                    f"its shape {list(shape)} and dtype {entry['dtype']}")
            if data_start + end > self.size:
                raise self._corrupt(
                    f"tensor {name!r} ending at byte {data_start + end:,}, past the end of the file "
                    f"(the header says the file is at least "
                    f"{data_start + max(int(e['data_offsets'][1]) for e in header.values()):,} bytes)")
            tensors[name] = TensorInfo(name, dtype, shape, data_start + begin, nbytes)
        return tensors, metadata

    # -- reading --------------------------------------------------------------------------------
    def _pread(self, offset: int, nbytes: int) -> bytes:
        buf = bytearray(nbytes)
        self._file.read_into(offset, memoryview(buf))
        return bytes(buf)

    def read_into(self, name: str, out: torch.Tensor) -> None:
        """Copy tensor `name`'s raw bytes into `out`, a contiguous CPU uint8 tensor of exactly its size
        (pinned or not). No intermediate copy: the kernel writes straight into `out`."""
        info = self.tensors[name]
        self._file.read_tensor_into(name, info.offset, info.nbytes, out)

    def read(self, name: str) -> torch.Tensor:
        """A fresh CPU tensor holding tensor `name` (its own memory, not a view of a mapping)."""
        info = self.tensors[name]
        raw = torch.empty(info.nbytes, dtype=torch.uint8)
        self.read_into(name, raw)
        return raw.view(info.dtype).reshape(info.shape) if info.nbytes else torch.empty(info.shape, dtype=info.dtype)

    def read_rows(self, name: str, rows: list[int]) -> torch.Tensor:
        """Rows of a 2D tensor (an embedding table) without reading the rest: [len(rows), width]."""
        info = self.tensors[name]
        return self._file.read_rows(name, info.offset, info.shape, info.nbytes, rows).view(info.dtype)

    def close(self) -> None:
        if hasattr(self, "_file"):
            self._file.close()
