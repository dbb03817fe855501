"""GGUF files (city96's HunyuanVideo quants, llama.cpp LLaVA-Llama-3 quants) behind the TensorSource interface.

The header is parsed with the gguf package (PyPI); the tensor data is then read with positioned reads,
never through a mapping of the whole file, so a 26 GB file opens on a 24 GB machine and host memory holds
only what is read. Quantised tensors keep their bytes: `read_into` writes them as stored (a uint8 matrix,
one row of blocks per weight row) for the host store and the wire, and the compute device decodes them at
use (quant/dequant.py); `read` and `read_rows` decode on the host, for the small non-block tensors and
embedding lookups. Shapes are the logical ones: GGUF's reversed dims, or `comfy.gguf.orig_shape.<name>`
where ComfyUI-GGUF's converter reshaped a tensor.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..errors import CorruptFileError, NotFoundError, UnsupportedLayoutError, list_some
from ..quant.dequant import dequantize
from ..quant.kinds import BY_ID, FLOAT_IDS, KINDS, QuantKind
from .positioned_file import PositionedFile
from .tensor_source import Meta, TensorSource

FLOAT_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
ORIG_SHAPE = "comfy.gguf.orig_shape."


@dataclass(frozen=True)
class GGUFTensor:
    name: str
    kind: QuantKind | None  # None: a plain float tensor
    dtype: torch.dtype  # float dtype, or uint8 for quantised bytes
    shape: tuple[int, ...]  # logical shape
    offset: int
    nbytes: int

    @property
    def storage_shape(self) -> tuple[int, ...]:
        if self.kind is None:
            return self.shape
        cols = self.shape[-1]
        rows = self.nbytes // self.kind.row_bytes(cols) if cols else 0
        return (rows, self.kind.row_bytes(cols))


def _type_name(type_id: int) -> str:
    try:
        import gguf

        return gguf.GGMLQuantizationType(type_id).name
    except (ImportError, ValueError):
        return f"type {type_id}"


class GGUFSource(TensorSource):
    def __init__(self, path: str):
        self.path = os.fspath(path)
        self.describe = self.path
        if not os.path.isfile(self.path):
            raise NotFoundError("a GGUF file", f"nothing at {self.path!r}", "check the path or the file picked in the node")
        self.size = os.path.getsize(self.path)
        self.metadata, infos = self._parse()
        self.arch = self.metadata.get("general.architecture")
        self._tensors = {t.name: t for t in infos}
        self._file = PositionedFile(self.path, self._corrupt)

    # -- header ---------------------------------------------------------------------------------
    def _corrupt(self, found: str) -> CorruptFileError:
        return CorruptFileError("a complete GGUF file (magic, version, key/values, tensor infos, tensor data)",
                                f"{found} in {self.path!r} ({self.size:,} bytes)",
                                "the download or copy was probably cut short; download the file again and compare its size")

    def _parse(self):
        try:
            import gguf
        except ImportError:
            raise UnsupportedLayoutError("the gguf package to read GGUF files", "it is not installed",
                                         "pip install gguf (it is in HyStream's requirements.txt)") from None
        if self.size < 24:
            raise self._corrupt("a file too short to hold a GGUF header")
        try:
            reader = gguf.GGUFReader(self.path, "r")
        except Exception as e:  # noqa: BLE001 - bad magic, unknown version, a header cut short (numpy errors)
            raise self._corrupt(f"an unreadable header ({type(e).__name__}: {str(e).splitlines()[0][:160]})") from None
        try:
            metadata, shapes = {}, {}
            for key, field in reader.fields.items():
                if key.startswith(ORIG_SHAPE):
                    shapes[key[len(ORIG_SHAPE):]] = tuple(int(v) for v in field.contents())
                elif key in ("general.architecture", "general.name", "general.type", "general.file_type") or \
                        key.endswith((".block_count", ".head_count", ".head_count_kv", ".embedding_length")):
                    metadata[key] = field.contents()
            infos, unsupported = [], []
            for t in reader.tensors:
                type_id = int(t.tensor_type)
                dims = tuple(int(d) for d in reversed([int(x) for x in t.shape]))
                if type_id in FLOAT_IDS:
                    kind, dtype = None, FLOAT_DTYPES[FLOAT_IDS[type_id]]
                elif type_id in BY_ID:
                    kind, dtype = BY_ID[type_id], torch.uint8
                else:
                    unsupported.append(f"{t.name} ({_type_name(type_id)})")
                    continue
                shape = shapes.get(t.name, dims)
                infos.append(GGUFTensor(t.name, kind, dtype, shape, int(t.data_offset), int(t.n_bytes)))
        finally:
            del reader  # drops the header's mapping: tensor data is read with positioned reads only
        if unsupported:
            raise UnsupportedLayoutError(
                f"GGUF tensors in F32, F16, BF16 or {', '.join(sorted(KINDS))}",
                f"{len(unsupported)} in another type: {list_some(unsupported, 4)} in {self.path!r}",
                "use a Q8_0, Q6_K, Q5_K_M, Q4_K_M or Q3_K_S file of the model (the IQ and ternary types are not supported)")
        for t in infos:
            n = 1
            for s in t.shape:
                n *= s
            expected = n * t.dtype.itemsize if t.kind is None else (n // t.kind.block_size * t.kind.type_size)
            if expected != t.nbytes:
                raise self._corrupt(f"tensor {t.name!r} whose shape {list(t.shape)} does not fit its "
                                    f"{t.nbytes:,} bytes (a reshaped tensor without its {ORIG_SHAPE} metadata?)")
            if t.offset + t.nbytes > self.size:
                raise self._corrupt(f"tensor {t.name!r} ending at byte {t.offset + t.nbytes:,}, past the end of the file")
        return metadata, infos

    # -- TensorSource ---------------------------------------------------------------------------
    def keys(self) -> list[str]:
        return list(self._tensors)

    def __contains__(self, name: str) -> bool:
        return name in self._tensors

    def tensor(self, name: str) -> GGUFTensor:
        return self._tensors[name]

    def info(self, name: str) -> Meta:
        t = self._tensors[name]
        return Meta(t.dtype, t.shape, t.kind.name if t.kind else None)

    def read_into(self, name: str, out: torch.Tensor) -> None:
        """The tensor's bytes as stored (quantised ones stay quantised) into a contiguous CPU uint8 buffer."""
        t = self._tensors[name]
        self._file.read_tensor_into(name, t.offset, t.nbytes, out)

    def read(self, name: str) -> torch.Tensor:
        """The tensor as numbers: float ones in their dtype, quantised ones decoded to float32."""
        t = self._tensors[name]
        raw = torch.empty(t.nbytes, dtype=torch.uint8)
        self.read_into(name, raw)
        if t.kind is None:
            return raw.view(t.dtype).reshape(t.shape)
        return dequantize(raw.reshape(t.storage_shape), t.kind, t.shape[-1]).reshape(t.shape)

    def read_rows(self, name: str, rows: list[int]) -> torch.Tensor:
        """Rows of a 2D tensor (an embedding table), decoded, without reading the rest."""
        t = self._tensors[name]
        out = self._file.read_rows(name, t.offset, t.shape, t.nbytes, rows)
        return out.view(t.dtype) if t.kind is None else dequantize(out, t.kind, t.shape[1])

    def close(self) -> None:
        if hasattr(self, "_file"):
            self._file.close()
