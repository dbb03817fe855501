"""How HunyuanVideo 1.0's DiT (T2V, HunyuanVideo-I2V, SkyReels-I2V) is read and built: the spec
loaders/streamed.py loads it with."""

from __future__ import annotations

import re

import torch

from ...errors import CorruptFileError
from ..base import StreamedSpec
from .config import DiTConfig, infer_dit_config
from .dit import HunyuanVideoDiT
from .framepack_dit import FramePackDiT
from .keys import detect_dit_layout
from .memory import forward_peak_bytes

BLOCK_RE = re.compile(r"(txt_in\.individual_token_refiner\.blocks|double_blocks|single_blocks)\.(\d+)\.(.+)")


def check_gguf_patch_embedding(source, shapes: dict) -> None:
    """GGUF holds at most 4 dimensions: the 5-D patch embedding is stored as ComfyUI-GGUF's fix_5d_tensors
    writes it (5 dims), or reshaped with its `comfy.gguf.orig_shape` metadata. Without either, say so."""
    shape = shapes.get("img_in.proj.weight")
    if getattr(source, "arch", None) is not None and shape is not None and len(shape) != 5:
        raise CorruptFileError("img_in.proj.weight as the 5-D patch embedding [hidden, C, 1, 2, 2]",
                               f"shape {list(shape)} and no comfy.gguf.orig_shape.img_in.proj.weight metadata "
                               f"in {source.describe}",
                               "the file was converted without ComfyUI-GGUF's 5-D fix (tools/fix_5d_tensors.py); "
                               "download a complete HunyuanVideo GGUF (city96's) or re-run the fix")


class DiTSpec(StreamedSpec):
    what = "a HunyuanVideo T2V DiT"
    label = "the DiT"
    fp16_ok = False  # HunyuanVideo overflows in fp16: only when chosen explicitly
    gguf_dtype = "bfloat16"

    def layout(self, source):
        return detect_dit_layout(source)

    def config(self, shapes: dict, source) -> DiTConfig:
        check_gguf_patch_embedding(source, shapes)
        return infer_dit_config(shapes, source.describe)

    def build(self, cfg: DiTConfig, device) -> HunyuanVideoDiT:
        kind = FramePackDiT if cfg.framepack else HunyuanVideoDiT
        with torch.device("meta"):
            return kind(cfg, estimator=forward_peak_bytes)

    def block_of(self, cfg: DiTConfig, name: str) -> tuple[int, str] | None:
        m = BLOCK_RE.match(name)
        if not m:
            return None
        kind, n, rest = m.groups()  # streamed in the order they run: refiner, double, single
        first = {"double_blocks": cfg.depth_refiner, "single_blocks": cfg.depth_refiner + cfg.depth_double}
        return first.get(kind, 0) + int(n), rest

    def quantisable(self, name: str, shape: tuple) -> bool:
        # the double and single blocks' Linears; the token refiner's stay in the file's dtype
        return not name.startswith("txt_in.") and super().quantisable(name, shape)


DIT_SPEC = DiTSpec()
