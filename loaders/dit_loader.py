"""Load the HunyuanVideo DiT from any file users have, lazily.

Only the header is read up front. The small non-block parts (embedders, token refiner, final layer) are
read and placed on the compute device; the 60 blocks are described to the streaming engine, which reads
each one from the file when it is needed (or keeps it resident when the budget allows). Host memory
never holds the state dict.
"""

from __future__ import annotations

import re
import weakref
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

import torch

from ..errors import CorruptFileError
from ..models.dit import HunyuanVideoDiT
from ..models.dit_config import DiTConfig, infer_dit_config
from ..offload.binding import bind
from ..offload.host_store import auto_host_tier, pinned_bytes
from ..offload.settings import HostHandOver, StreamSettings
from ..offload.source import PackedSource
from ..offload.streamer import BlockStreamer
from .dit_layout import detect_dit_layout
from .key_check import check_fp8_scales, check_tensors, scale_names
from .dtypes import check_compute_dtype, check_weight_dtype, compute_dtype, dominant_float_dtype, store_dtype
from .recipes import block_sources, mark_quantised, read_recipe, recipe_meta
from .tensor_source import TensorSource, open_checkpoint

BLOCK_RE = re.compile(r"(txt_in\.individual_token_refiner\.blocks|double_blocks|single_blocks)\.(\d+)\.(.+)")


@dataclass
class LoadedDiT:
    """A DiT ready to run: the model skeleton, its streamer and what was loaded from where."""

    model: HunyuanVideoDiT
    streamer: BlockStreamer
    config: DiTConfig
    layout: str
    path: str
    file_dtype: torch.dtype
    source: TensorSource = field(repr=False)
    fixed_host: dict = field(repr=False, default_factory=dict)  # the non-block tensors, on the host
    on_device: bool = False

    def __call__(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    @property
    def stats(self):
        return self.streamer.stats

    def to_device(self) -> None:
        """Place the non-block parts on the compute device (blocks arrive with each run)."""
        if not self.on_device:
            device = self.model.device
            self.streamer.make_room_for_fixed()
            bind(self.model, {n: t.to(device) for n, t in self.fixed_host.items()})
            self.on_device = True
            self.streamer.fixed_placed(True)

    def release_device(self) -> None:
        """Hold nothing on the compute device between runs: resident blocks and the non-block parts go
        back to the host (the host store stays, so the next run starts without touching the disk)."""
        self.streamer.set_resident(())
        self.model.clear_caches()
        if self.model.device.type != "cpu" and self.on_device:
            bind(self.model, self.fixed_host)
            self.on_device = False
            self.streamer.fixed_placed(False)

    def host_tensors(self) -> list[torch.Tensor]:
        """The host RAM this DiT holds: its non-block parts and the streamer's page-locked / converted blocks."""
        return list(self.fixed_host.values()) + self.streamer.host_tensors()

    def close(self) -> None:
        """Free device buffers (the non-block parts too), page-locked memory and the file handles."""
        self.release_device()
        self.streamer.detach()
        self.source.close()


def check_gguf_patch_embedding(source: TensorSource, metas: dict) -> None:
    """GGUF holds at most 4 dimensions: the 5-D patch embedding is stored as ComfyUI-GGUF's fix_5d_tensors
    writes it (5 dims), or reshaped with its `comfy.gguf.orig_shape` metadata. Without either, say so."""
    meta = metas.get("img_in.proj.weight")
    if getattr(source, "arch", None) is not None and meta is not None and len(meta.shape) != 5:
        raise CorruptFileError("img_in.proj.weight as the 5-D patch embedding [hidden, C, 1, 2, 2]",
                               f"shape {list(meta.shape)} and no comfy.gguf.orig_shape.img_in.proj.weight metadata "
                               f"in {source.describe}",
                               "the file was converted without ComfyUI-GGUF's 5-D fix (tools/fix_5d_tensors.py); "
                               "download a complete HunyuanVideo GGUF (city96's) or re-run the fix")


def gguf_block_kind(metas: dict) -> str:
    """The quantisation type most of a GGUF DiT's block weights are in (what its memory estimate decodes)."""
    counts = Counter(m.quant for n, m in metas.items() if m.quant and BLOCK_RE.match(n))
    return counts.most_common(1)[0][0] if counts else "Q8_0"


def release_host_memory(store, source) -> None:
    store.release()
    source.close()


def _block_index(name: str, cfg: DiTConfig) -> tuple[int, str] | None:
    m = BLOCK_RE.match(name)
    if not m:
        return None
    kind, n, rest = m.groups()  # streamed in the order they run: refiner, double, single
    first = {"double_blocks": cfg.depth_refiner, "single_blocks": cfg.depth_refiner + cfg.depth_double}
    return first.get(kind, 0) + int(n), rest


def _activation_estimate(model: HunyuanVideoDiT):
    def estimate(args: tuple, kwargs: dict) -> int:
        x = kwargs.get("x", args[0] if args else None)
        txt = kwargs.get("txt", args[2] if len(args) > 2 else None)
        return model.activation_bytes(tuple(x.shape), txt.shape[1] if txt is not None else 0) if x is not None else 0
    return estimate


def read_dit_config(path: str) -> DiTConfig:
    """The DiT's config from the file's header alone (e.g. which I2V variant it is), nothing loaded."""
    source = open_checkpoint(path, subfolders=("transformer",))
    try:
        layout = detect_dit_layout(source)
        metas = {name: recipe_meta(source, r, name) for name, r in layout.recipes.items()}
        check_gguf_patch_embedding(source, metas)
        return infer_dit_config({n: m.shape for n, m in metas.items()}, source.describe)
    finally:
        source.close()


def load_dit(path: str, device: str | torch.device = "cpu", *, weight_dtype: str = "auto", prefetch_blocks: int = 1,
             vram_budget_gb: float | None = None, resident_blocks: Iterable[int] | str | None = None,
             host_tier: str = "auto", compute: str = "auto", backend=None, ram_reserve: int = 0,
             reserve_bytes: int = 0, hand_over: HostHandOver | None = None) -> LoadedDiT:
    """Open a DiT checkpoint (file or folder, any supported layout) for streamed execution.

    vram_budget_gb: device memory for the whole stage (weights + ring + activations); the blocks that
        fit stay resident, re-planned for each run's size. 0 = automatic (free device memory; on the CPU
        every block streams). None = no budget: `resident_blocks` decides.
    resident_blocks: None → every block streams; "all" → every block stays on the device; or indices.
    host_tier: "pinned" | "mapped" | "auto" (CUDA; auto pins when the blocks fit in free RAM).
    compute: "auto" | "bf16" | "fp16" | "fp32" — fp16 only when chosen here (see loaders/dtypes.py).
    backend: the streamer's device backend (tests pass a simulated CUDA); default from `device`.
    ram_reserve: RAM the host may still page-lock for itself; the pinned tier never counts on it.
    reserve_bytes: device memory an automatic budget leaves to other programs (the CLI's --reserve-vram).
    hand_over: a host sharing the device (nodes/host.py share_device): its free memory and make_room.
    """
    check_weight_dtype(weight_dtype)
    check_compute_dtype(compute)
    device = torch.device(device)
    source = open_checkpoint(path, subfolders=("transformer",))
    try:
        layout = detect_dit_layout(source)
        metas = {name: recipe_meta(source, r, name) for name, r in layout.recipes.items()}
        check_gguf_patch_embedding(source, metas)
        cfg = infer_dit_config({n: m.shape for n, m in metas.items()}, source.describe)
        with torch.device("meta"):
            model = HunyuanVideoDiT(cfg)
        check_tensors({n: tuple(p.shape) for n, p in model.named_parameters()}, metas,
                      optional=scale_names(model, metas), unused=layout.unused, describe=source.describe,
                      what="a HunyuanVideo T2V DiT")
        check_fp8_scales(metas, marker=any(k.endswith("scaled_fp8") for k in source.keys()),
                         describe=source.describe, what="the DiT")

        file_dtype = dominant_float_dtype(m.dtype for n, m in metas.items() if BLOCK_RE.match(n))
        if any(m.quant for m in metas.values()):
            file_dtype = torch.bfloat16  # GGUF quants compute like the bf16 model they came from
        model.compute_dtype = compute_dtype(weight_dtype, file_dtype, device, compute=compute, fp16_ok=False)
        model.block_weight_dtype = store_dtype(weight_dtype, file_dtype, quantisable=True)
        if weight_dtype == "auto" and any(m.quant for m in metas.values()):
            model.block_weight_dtype = gguf_block_kind(metas)
        model.device = device

        def store(name, meta, in_block):
            if meta.quant:  # GGUF: blocks keep their quantised bytes (auto); the small fixed parts are decoded
                if in_block and weight_dtype == "auto":
                    return meta.dtype
                if in_block:
                    return store_dtype(weight_dtype, torch.bfloat16,
                                       quantisable=len(meta.shape) == 2 and not name.startswith("txt_in."))
                # decoded once into the dtype they are cast to at use anyway (float32 where it computes so)
                return model.compute_dtype if model.compute_dtype.itemsize == 2 else torch.float32
            quantisable = (in_block and not name.startswith("txt_in.") and name.endswith(".weight")
                           and len(meta.shape) == 2)  # the double and single blocks' Linears
            return store_dtype(weight_dtype, meta.dtype, quantisable=quantisable)

        blocks, fixed_recipes = block_sources(source, layout.recipes, metas, len(model.blocks),
                                              lambda n: _block_index(n, cfg), store)
        # the small non-block parts (0.18 GiB at full size) stay in ordinary memory: nothing is locked
        # for a one-off upload per stage, and nothing stays locked when the model is dropped
        fixed = {n: read_recipe(source, r, dt) for n, (r, dt) in fixed_recipes.items()}
        mark_quantised(model.blocks, blocks, metas, lambda n: _block_index(n, cfg))

        if resident_blocks == "all":
            resident = range(len(model.blocks))
        else:
            resident = resident_blocks or ()
        source_blocks = PackedSource(blocks)
        tier = host_tier if host_tier != "auto" else auto_host_tier(
            pinned_bytes([source_blocks.layout(i).nbytes for i in range(len(source_blocks))]), reserve=ram_reserve)
        budgeted = vram_budget_gb is not None and resident_blocks is None
        settings = StreamSettings(
            prefetch=prefetch_blocks, resident=tuple(resident), host_tier=tier, ram_reserve=ram_reserve,
            fixed_bytes=sum(t.numel() * t.element_size() for t in fixed.values()), what="the DiT",
            budget_bytes=int(vram_budget_gb * 1024 ** 3) if budgeted else None, reserve_bytes=reserve_bytes,
            hand_over=hand_over, activation_estimate=_activation_estimate(model) if budgeted else None)
        streamer = BlockStreamer(model, model.blocks, source_blocks, device, settings, backend=backend)
        loaded = LoadedDiT(model, streamer, cfg, layout.name, str(path), file_dtype, source, fixed)
        # a dropped handle gives its page-locked memory back to the OS (not only at close())
        weakref.finalize(loaded, release_host_memory, streamer.store, source)
        loaded.to_device()
        return loaded
    except BaseException:
        source.close()
        raise

