"""Named tensors from one checkpoint, read on demand.

A checkpoint is a single .safetensors file, a sharded set with its `*.safetensors.index.json`, a folder
(diffusers `transformer/`, HF model folders) or a legacy PyTorch `.pt`/`.pth` (loaded with
`weights_only=True` and memory-mapped, never unpickled freely). Everything above this module sees the
same small interface: `keys()`, `info(name)`, `read(name)`, `read_into(name, out)`.
"""

from __future__ import annotations

import glob
import json
import os
import re
from dataclasses import dataclass

import torch

from ..errors import CorruptFileError, NotFoundError, UnsupportedLayoutError, list_some
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
        except Exception as e:  # pickle errors, zip errors, refused globals
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


SHARD_RE = re.compile(r"-\d{5}-of-\d{5}\.safetensors$")


def _files_from_index(index_path: str) -> list[str]:
    try:
        with open(index_path, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
    except (OSError, ValueError, KeyError) as e:
        raise CorruptFileError("a shard index JSON with a 'weight_map'", f"{type(e).__name__} in {index_path!r}",
                               "re-download the index file that belongs to the shards") from None
    folder = os.path.dirname(index_path)
    files = sorted(set(weight_map.values()))
    missing = [f for f in files if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise NotFoundError(f"all shards named by {os.path.basename(index_path)}",
                            f"missing {list_some(missing)} in {folder!r}", "download the missing shards")
    return [os.path.join(folder, f) for f in files]


def _folder_files(folder: str) -> list[str]:
    indexes = sorted(glob.glob(os.path.join(folder, "*.safetensors.index.json")))
    if indexes:
        return _files_from_index(indexes[0])
    files = sorted(glob.glob(os.path.join(folder, "*.safetensors")))
    if files:
        return files
    pts = sorted(glob.glob(os.path.join(folder, "*.pt")) + glob.glob(os.path.join(folder, "*.pth")))
    return pts


def open_checkpoint(path: str, subfolders: tuple[str, ...] = ()) -> TensorSource:
    """Open any checkpoint form. `subfolders` are tried inside a folder first (e.g. "transformer" for a
    diffusers pipeline folder), so users can point at the pipeline root or at the component."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise NotFoundError("a model file or folder", f"nothing at {path!r}",
                            "check the path; ComfyUI lists files from its models/ folders")
    if os.path.isdir(path):
        for sub in subfolders:
            if os.path.isdir(os.path.join(path, sub)):
                return open_checkpoint(os.path.join(path, sub))
        files = _folder_files(path)
        if not files:
            raise NotFoundError("a folder with .safetensors (or .pt) weights", f"none in {path!r}",
                                "point at the folder that holds the weight files")
        if files[0].endswith((".pt", ".pth")):
            return TorchPickleSource(files[0])
        return SafetensorsSource(files)
    lower = path.lower()
    if lower.endswith(".safetensors"):
        if SHARD_RE.search(path):  # one shard picked: open the whole set through its index
            indexes = glob.glob(os.path.join(os.path.dirname(path), "*.safetensors.index.json"))
            if indexes:
                return SafetensorsSource(_files_from_index(indexes[0]))
        return SafetensorsSource([path])
    if lower.endswith((".pt", ".pth", ".ckpt", ".bin")):
        return TorchPickleSource(path)
    if lower.endswith(".json") and lower.endswith(".index.json"):
        return SafetensorsSource(_files_from_index(path))
    if lower.endswith(".gguf"):
        from .gguf_file import GGUFSource

        return GGUFSource(path)
    raise UnsupportedLayoutError("a .safetensors, .pt/.pth file or a model folder",
                                 f"{os.path.basename(path)!r}", "convert or download the safetensors release")
