"""How HunyuanVideo 1.5's DiT is read and built: the spec loaders/streamed.py loads it with."""

from __future__ import annotations

import re

import torch

from ...errors import CorruptFileError
from ..base import StreamedSpec
from .config import DiTConfig, infer_dit_config
from .dit import HunyuanVideo15DiT
from .keys import detect_dit_layout
from .memory import forward_peak_bytes

BLOCK_RE = re.compile(r"(txt_in\.individual_token_refiner\.blocks|double_blocks)\.(\d+)\.(.+)")


def check_gguf_patch_embedding(source, shapes: dict) -> None:
    """GGUF holds at most 4 dimensions: the 5-D patch embedding needs ComfyUI-GGUF's 5-D fix or its
    `comfy.gguf.orig_shape` metadata."""
    shape = shapes.get("img_in.proj.weight")
    if getattr(source, "arch", None) is not None and shape is not None and len(shape) != 5:
        raise CorruptFileError("img_in.proj.weight as the 5-D patch embedding [hidden, 65, 1, 1, 1]",
                               f"shape {list(shape)} and no comfy.gguf.orig_shape.img_in.proj.weight metadata "
                               f"in {source.describe}",
                               "the file was converted without ComfyUI-GGUF's 5-D fix (tools/fix_5d_tensors.py); "
                               "download a complete HunyuanVideo 1.5 GGUF or re-run the fix")


class DiTSpec(StreamedSpec):
    what = "a HunyuanVideo 1.5 DiT"
    label = "the DiT"
    fp16_ok = False  # the releases are fp16 files, but compute in bf16 where the GPU has it (fp16 may overflow)
    gguf_dtype = "bfloat16"

    def layout(self, source):
        return detect_dit_layout(source)

    def config(self, shapes: dict, source) -> DiTConfig:
        check_gguf_patch_embedding(source, shapes)
        return infer_dit_config(shapes, source.describe)

    def build(self, cfg: DiTConfig, device) -> HunyuanVideo15DiT:
        with torch.device("meta"):
            return HunyuanVideo15DiT(cfg, estimator=forward_peak_bytes)

    def block_of(self, cfg: DiTConfig, name: str) -> tuple[int, str] | None:
        m = BLOCK_RE.match(name)
        if not m:
            return None
        kind, n, rest = m.groups()  # streamed in the order they run: the refiner's, then the dual-stream ones
        return (cfg.depth_refiner if kind == "double_blocks" else 0) + int(n), rest

    def quantisable(self, name: str, shape: tuple) -> bool:
        return not name.startswith("txt_in.") and super().quantisable(name, shape)


DIT_SPEC = DiTSpec()
