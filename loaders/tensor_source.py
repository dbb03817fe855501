"""Named tensors from one checkpoint, read on demand: the interface every file reader serves (`keys()`,
`info(name)`, `read(name)`, `read_into(name, out)`), and the safetensors and legacy PyTorch readers.
Which reader opens which file: checkpoint.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..errors import CorruptFileError
from ..quant.kinds import KINDS
from .safetensors_file import SafetensorsFile, element_size


@dataclass(frozen=True)
class Meta:
    """What a tensor is, without its data. `quant`: a GGUF quantisation type (quant/kinds.py); then `dtype`
    is uint8 and the tensor is stored as `storage_shape`: one row of quantised blocks per row of `shape`."""

    dtype: torch.dtype
    shape: tuple[int, ...]
    quant: str | None = None

    @property
    def storage_shape(self) -> tuple[int, ...]:
        if self.quant is None:
            return self.shape
        rows = 1
        for s in self.shape[:-1]:
            rows *= s
        return (rows, KINDS[self.quant].row_bytes(self.shape[-1]))

    @property
    def nbytes(self) -> int:
        n = element_size(self.dtype)
        for s in self.storage_shape:
            n *= s
        return n


class TensorSource:
    """Base interface. `describe` names the files in error messages."""

    describe: str = "checkpoint"
    metadata: dict

    def keys(self) -> list[str]:
        raise NotImplementedError

    def info(self, name: str) -> Meta:
        raise NotImplementedError

    def read_into(self, name: str, out: torch.Tensor) -> None:
        raise NotImplementedError

    def read(self, name: str) -> torch.Tensor:
        meta = self.info(name)
        raw = torch.empty(meta.nbytes, dtype=torch.uint8)
        self.read_into(name, raw)
        return raw.view(meta.dtype).reshape(meta.shape) if meta.nbytes else torch.empty(meta.shape, dtype=meta.dtype)

    def read_rows(self, name: str, rows: list[int]) -> torch.Tensor:
        """Selected rows of a 2D tensor (embedding lookups on the host)."""
        return self.read(name)[torch.tensor(rows, dtype=torch.long)]

    def __contains__(self, name: str) -> bool:
        return name in set(self.keys())

    def close(self) -> None:
        pass


class SafetensorsSource(TensorSource):
    def __init__(self, paths: list[str]):
        self.files: list[SafetensorsFile] = []
        try:
            for p in paths:
                self.files.append(SafetensorsFile(p))
        except BaseException:
            self.close()
            raise
        self._where: dict[str, SafetensorsFile] = {}
        self.metadata = {}
        for f in self.files:
            self.metadata.update(f.metadata)
            for name in f.tensors:
                self._where[name] = f
        self.describe = paths[0] if len(paths) == 1 else f"{os.path.dirname(paths[0])} ({len(paths)} shards)"

    def keys(self) -> list[str]:
        return list(self._where)

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def info(self, name: str) -> Meta:
        t = self._where[name].tensors[name]
        return Meta(t.dtype, t.shape)

    def read_into(self, name: str, out: torch.Tensor) -> None:
        self._where[name].read_into(name, out)

    def read(self, name: str) -> torch.Tensor:
        return self._where[name].read(name)

    def read_rows(self, name: str, rows: list[int]) -> torch.Tensor:
        return self._where[name].read_rows(name, rows)

    def close(self) -> None:
        for f in self.files:
            f.close()


class TorchPickleSource(TensorSource):
    """Tencent's original `.pt` checkpoints: `{"module": state_dict}` or a bare state dict."""

    def __init__(self, path: str):
        self.describe = path
        self.metadata = {}
        try:
            try:
                obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as e:
                if "mmap can only be used" not in str(e):
                    raise
                obj = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
        except Exception as e:  # noqa: BLE001 - pickle errors, zip errors, refused globals
            raise CorruptFileError("a PyTorch checkpoint loadable with weights_only=True",
                                   f"{type(e).__name__}: {str(e).splitlines()[0][:200]} in {path!r}",
                                   "use the .safetensors release of this model, or re-download the file") from None
        for wrapper in ("module", "state_dict", "model"):
            if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise CorruptFileError("a state dict (name → tensor)", f"a {type(obj).__name__} in {path!r}",
                                   "point HyStream at the model weights file")
        self._sd = obj

    def keys(self) -> list[str]:
        return list(self._sd)

    def __contains__(self, name: str) -> bool:
        return name in self._sd

    def info(self, name: str) -> Meta:
        t = self._sd[name]
        return Meta(t.dtype, tuple(t.shape))

    def read_into(self, name: str, out: torch.Tensor) -> None:
        t = self._sd[name].contiguous()
        out.copy_(t.reshape(-1).view(torch.uint8) if t.numel() else out)

    def read(self, name: str) -> torch.Tensor:
        return self._sd[name].clone()

    def read_rows(self, name: str, rows: list[int]) -> torch.Tensor:
        return self._sd[name][torch.tensor(rows, dtype=torch.long)].clone()
