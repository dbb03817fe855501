"""Open any checkpoint form users have: a single .safetensors file, a sharded set with its
`*.safetensors.index.json`, a folder (diffusers `transformer/`, HF model folders), a GGUF file, or a legacy
PyTorch `.pt`/`.pth` (loaded with `weights_only=True` and memory-mapped, never unpickled freely)."""

from __future__ import annotations

import glob
import json
import os
import re

from ..errors import CorruptFileError, NotFoundError, UnsupportedLayoutError, list_some
from .gguf_file import GGUFSource
from .tensor_source import SafetensorsSource, TensorSource, TorchPickleSource

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
        return GGUFSource(path)
    raise UnsupportedLayoutError("a .safetensors, .gguf or .pt/.pth file, or a model folder",
                                 f"{os.path.basename(path)!r}", "convert or download the safetensors (or GGUF) release")
