"""Load the HunyuanVideo DiT from any file users have, lazily.

Only the header is read up front. The small non-block parts (embedders, token refiner, final layer) are
read and placed on the compute device; the 60 blocks are described to the streaming engine, which reads
each one from the file when it is needed (or keeps it resident when the budget allows). Host memory
never holds the state dict.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Iterable

import torch

from ..errors import StateDictError, list_some
from ..models.dit import HunyuanVideoDiT
from ..models.dit_config import DiTConfig, infer_dit_config
from ..models.layers import Linear
from ..offload.binding import bind
from ..offload.host_store import auto_host_tier
from ..offload.source import PackedSource
from ..offload.streamer import BlockStreamer
from .dit_layout import detect_dit_layout
from .dtypes import check_weight_dtype, compute_dtype, dominant_float_dtype, store_dtype
from .recipes import make_filler, read_recipe, recipe_meta
from .tensor_source import Meta, TensorSource, open_checkpoint

BLOCK_RE = re.compile(r"(double_blocks|single_blocks)\.(\d+)\.(.+)")


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

    def __call__(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    @property
    def stats(self):
        return self.streamer.stats

    def close(self) -> None:
        """Free device buffers, pinned memory and the file handles."""
        self.streamer.detach()
        self.source.close()


def _block_index(name: str, cfg: DiTConfig) -> tuple[int, str] | None:
    m = BLOCK_RE.match(name)
    if not m:
        return None
    kind, n, rest = m.groups()
    return (int(n) if kind == "double_blocks" else cfg.depth_double + int(n)), rest


def _check_keys(model: HunyuanVideoDiT, metas: dict[str, Meta], unused: list[str], describe: str) -> None:
    expected = {n: tuple(p.shape) for n, p in model.named_parameters()}
    linears = {n for n, m in model.named_modules() if isinstance(m, Linear)}
    scales = {n for n in metas if n.endswith(".scale_weight") and n[: -len(".scale_weight")] in linears}
    missing = sorted(set(expected) - set(metas))
    unexpected = sorted(set(metas) - set(expected) - scales) + unused
    if missing or unexpected:
        found = []
        if missing:
            found.append(f"{len(missing)} missing tensors ({list_some(missing, 4)})")
        if unexpected:
            found.append(f"{len(unexpected)} unexpected tensors ({list_some(unexpected, 4)})")
        raise StateDictError("every tensor of a HunyuanVideo T2V DiT and nothing else", f"{'; '.join(found)} in {describe}",
                             "the file is incomplete or belongs to another model variant; use an official release file")
    wrong = [f"{n}: file {list(metas[n].shape)}, model {list(s)}" for n, s in expected.items() if tuple(metas[n].shape) != s]
    wrong += [f"{n}: file {list(metas[n].shape)}, expected one value" for n in scales if math.prod(metas[n].shape) != 1]
    if wrong:
        raise StateDictError("tensor shapes consistent with the config read from the file",
                             f"{len(wrong)} contradicting shapes ({list_some(wrong, 3)}) in {describe}",
                             "the file mixes tensors of different models; download it again")


def _activation_estimate(model: HunyuanVideoDiT):
    def estimate(args: tuple, kwargs: dict) -> int:
        x = kwargs.get("x", args[0] if args else None)
        txt = kwargs.get("txt", args[2] if len(args) > 2 else None)
        return model.activation_bytes(tuple(x.shape), txt.shape[1] if txt is not None else 0) if x is not None else 0
    return estimate


def load_dit(path: str, device: str | torch.device = "cpu", *, weight_dtype: str = "auto", prefetch_blocks: int = 1,
             vram_budget_gb: float | None = None, resident_blocks: Iterable[int] | str | None = None,
             host_tier: str = "auto") -> LoadedDiT:
    """Open a DiT checkpoint (file or folder, any supported layout) for streamed execution.

    vram_budget_gb: device memory for the whole stage (weights + ring + activations); the blocks that
        fit stay resident, re-planned for each run's size. 0 = automatic (free device memory; on the CPU
        every block streams). None = no budget: `resident_blocks` decides.
    resident_blocks: None → every block streams; "all" → every block stays on the device; or indices.
    host_tier: "pinned" | "mapped" | "auto" (CUDA; auto pins when the blocks fit in free RAM).
    """
    check_weight_dtype(weight_dtype)
    device = torch.device(device)
    source = open_checkpoint(path, subfolders=("transformer",))
    try:
        layout = detect_dit_layout(source)
        metas = {name: recipe_meta(source, r, name) for name, r in layout.recipes.items()}
        cfg = infer_dit_config({n: m.shape for n, m in metas.items()}, source.describe)
        with torch.device("meta"):
            model = HunyuanVideoDiT(cfg)
        _check_keys(model, metas, layout.unused, source.describe)

        file_dtype = dominant_float_dtype(m.dtype for n, m in metas.items() if BLOCK_RE.match(n))
        model.compute_dtype = compute_dtype(weight_dtype, file_dtype, device)
        model.device = device

        blocks: list[list] = [[] for _ in range(cfg.num_blocks)]
        fixed: dict[str, torch.Tensor] = {}
        for name, recipe in layout.recipes.items():
            meta = metas[name]
            where = _block_index(name, cfg)
            quantisable = where is not None and name.endswith(".weight") and len(meta.shape) == 2
            sd = store_dtype(weight_dtype, meta.dtype, quantisable=quantisable)
            if where is None:
                fixed[name] = read_recipe(source, recipe, sd).to(device)
            else:
                index, local = where
                blocks[index].append((local, sd, meta.shape, make_filler(source, recipe, sd)))
        bind(model, fixed)

        if resident_blocks == "all":
            resident = range(cfg.num_blocks)
        else:
            resident = resident_blocks or ()
        source_blocks = PackedSource(blocks)
        tier = host_tier if host_tier != "auto" else auto_host_tier(
            sum(source_blocks.layout(i).nbytes for i in range(len(source_blocks))))
        streamer = BlockStreamer(model, model.blocks, source_blocks, device, prefetch=prefetch_blocks,
                                 resident=resident, host_tier=tier,
                                 fixed_bytes=sum(t.numel() * t.element_size() for t in fixed.values()))
        streamer.what = "the DiT"
        if vram_budget_gb is not None and resident_blocks is None:
            streamer.budget_bytes = int(vram_budget_gb * 1024 ** 3)
            streamer.activation_estimate = _activation_estimate(model)
        return LoadedDiT(model, streamer, cfg, layout.name, str(path), file_dtype, source)
    except BaseException:
        source.close()
        raise

