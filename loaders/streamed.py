"""The one loading sequence for a streamed model (a DiT, a text encoder's decoder layers), whatever its
family: open file → the family's key layout → config from shapes → skeleton on meta → every tensor checked
→ dtypes decided → each block described to the streamer (read lazily, from the file) → the streamer.

Only the header is read up front; block tensors are read when the streamer needs them. The small fixed
(non-block) parts are returned as recipes: the caller reads them (a DiT's embedders) or reads rows of
them on demand (a text encoder's embedding table).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..offload.host_store import auto_host_tier, pinned_bytes
from ..offload.settings import HostHandOver, StreamSettings
from ..offload.source import PackedSource
from ..offload.streamer import BlockStreamer
from ..offload.units import StreamUnits
from ..sizes import GIB
from .dtypes import compute_dtype, dominant_float_dtype, store_dtype
from .key_check import check_fp8_scales, check_tensors
from .recipes import Recipe, block_sources, mark_quantised, recipe_meta
from .tensor_source import Meta, TensorSource


@dataclass(frozen=True)
class StreamOptions:
    """How the caller wants the model streamed (the loader nodes' and the CLI's settings)."""

    weight_dtype: str = "auto"  # auto | bf16 | fp16 | fp8_e4m3fn (loaders/dtypes.py)
    compute: str = "auto"  # auto | bf16 | fp16 | fp32
    prefetch: int = 1
    vram_budget_gb: float | None = None  # None: `resident` decides; 0: automatic; else GiB for the stage
    resident: Iterable[int] | str | None = None  # None: all stream; "all"; or block indices
    host_tier: str = "auto"  # pinned | mapped | auto
    ram_reserve: int = 0  # RAM the host may still page-lock for itself
    reserve_bytes: int = 0  # device memory an automatic budget leaves to other programs
    hand_over: HostHandOver | None = None  # a host sharing the device: its free memory and make_room
    backend: object = None  # the streamer's device backend (tests pass a simulated CUDA)


DEFAULT_OPTIONS = StreamOptions()  # the default argument (frozen: one instance serves every call)


@dataclass
class Streamed:
    """A model skeleton with its streamer, and what was read to build it."""

    model: nn.Module
    streamer: BlockStreamer
    cfg: object
    layout: str
    file_dtype: torch.dtype
    compute_dtype: torch.dtype
    block_dtype: torch.dtype | str  # how the blocks' quantisable weights are stored (a GGUF type's name)
    fixed: dict[str, tuple[Recipe, torch.dtype]] = field(repr=False)  # the non-block tensors, not read yet
    metas: dict[str, Meta] = field(repr=False)
    units: StreamUnits = field(repr=False, default=None)  # the streamer's units per block


def read_spec(spec, source: TensorSource):
    """(layout, metas, cfg) of a file for `spec`, without building anything."""
    layout = spec.layout(source)
    metas = {name: recipe_meta(source, r, name) for name, r in layout.recipes.items()}
    cfg = spec.config({n: m.shape for n, m in metas.items()}, source)
    return layout, metas, cfg


def _weight_of(scale_name: str) -> str:
    """A Comfy scaled-fp8 `X.scale_weight`'s matrix `X.weight` (optional only where X is a Linear)."""
    return scale_name[: -len(".scale_weight")] + ".weight"


def gguf_block_kind(metas: dict[str, Meta], in_block: Callable[[str], bool]) -> str:
    """The quantisation type most of a GGUF model's block weights are in (what its memory estimate decodes)."""
    counts = Counter(m.quant for n, m in metas.items() if m.quant and in_block(n))
    return counts.most_common(1)[0][0] if counts else "Q8_0"


def load_streamed(source: TensorSource, spec, device: torch.device, options: StreamOptions = StreamOptions(),
                  activation_estimate=None) -> Streamed:
    """Build `spec`'s model from `source` for streamed execution on `device` (see the module docstring).
    activation_estimate(args, kwargs): a bare forward's activation bytes, for an automatic budget."""
    layout, metas, cfg = read_spec(spec, source)
    recipes = {n: r for n, r in layout.recipes.items() if spec.keep(cfg, n)}
    metas = {n: metas[n] for n in recipes}
    model = spec.build(cfg, device)
    expected = spec.expected(model, cfg)
    scales = {n for n in metas if n.endswith(".scale_weight") and len(expected.get(_weight_of(n), ())) == 2}
    check_tensors(expected, metas, optional=scales, unused=layout.unused, describe=source.describe, what=spec.what)
    # a TensorSource has keys() but no __iter__
    check_fp8_scales(metas, marker=any(k.endswith("scaled_fp8") for k in source.keys()),  # noqa: SIM118
                     describe=source.describe, what=spec.label)

    def in_block(name):
        return spec.block_of(cfg, name) is not None

    units = StreamUnits(model.blocks)  # blocks that can run in parts stream as their parts

    def unit_of(name):
        where = spec.block_of(cfg, name)
        return None if where is None else units.unit_of(*where)

    quantised = any(m.quant for m in metas.values())
    file_dtype = dominant_float_dtype(m.dtype for n, m in metas.items() if in_block(n))
    if quantised:
        file_dtype = getattr(torch, spec.gguf_dtype)  # GGUF quants compute like the model they came from
    compute = compute_dtype(options.weight_dtype, file_dtype, device, compute=options.compute, fp16_ok=spec.fp16_ok)
    block_dtype = store_dtype(options.weight_dtype, file_dtype, quantisable=True)
    if options.weight_dtype == "auto" and quantised:
        block_dtype = gguf_block_kind(metas, in_block)

    def store(name, meta, block):
        quantisable = block and spec.quantisable(name, meta.shape)
        if meta.quant:  # GGUF: blocks keep their quantised bytes (auto); the small fixed parts are decoded
            if block and options.weight_dtype == "auto":
                return meta.dtype
            if block:
                return store_dtype(options.weight_dtype, torch.bfloat16, quantisable=quantisable)
            # decoded once into the dtype they are cast to at use anyway (float32 where it computes so)
            return compute if compute.itemsize == 2 else torch.float32
        return store_dtype(options.weight_dtype, meta.dtype, quantisable=quantisable)

    blocks, fixed = block_sources(source, recipes, metas, len(units), unit_of, store)
    mark_quantised(units.modules, blocks, metas, unit_of)
    packed = PackedSource(blocks)
    tier = options.host_tier if options.host_tier != "auto" else auto_host_tier(
        pinned_bytes([packed.layout(i).nbytes for i in range(len(packed))]), reserve=options.ram_reserve)
    resident = range(len(units)) if options.resident == "all" else units.units_of_blocks(options.resident or ())
    budgeted = options.vram_budget_gb is not None and options.resident is None
    fixed_bytes = sum(Meta(dt, metas[n].shape).nbytes for n, (_, dt) in fixed.items() if spec.reads_fixed(n))
    settings = StreamSettings(
        prefetch=options.prefetch, resident=tuple(resident), host_tier=tier, ram_reserve=options.ram_reserve,
        fixed_bytes=fixed_bytes, what=spec.label, reserve_bytes=options.reserve_bytes, hand_over=options.hand_over,
        budget_bytes=int(options.vram_budget_gb * GIB) if budgeted else None,
        activation_estimate=activation_estimate(model) if budgeted and activation_estimate else None)
    streamer = BlockStreamer(model, units.modules, packed, device, settings, backend=options.backend)
    return Streamed(model, streamer, cfg, layout.name, file_dtype, compute, block_dtype, fixed, metas, units)
