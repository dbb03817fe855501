"""Recipes: how one model tensor is assembled from checkpoint tensors, read lazily.

Most tensors are one checkpoint tensor renamed. Fused projections from split files (diffusers' to_q,
to_k, to_v → Tencent's qkv) are their parts concatenated along dim 0, which in row-major storage is
their bytes one after the other: they are read straight into consecutive ranges of the target buffer.
A few tensors swap their two halves (diffusers' final norm stores [scale, shift], Tencent [shift, scale]).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import StateDictError
from ..quant.kinds import KINDS
from .tensor_source import Meta, TensorSource

FP8_MAX = {torch.float8_e4m3fn: 448.0, torch.float8_e5m2: 57344.0}


@dataclass(frozen=True)
class Recipe:
    parts: tuple[str, ...]
    swap_halves: bool = False
    unpermute_heads: int = 0  # llama.cpp q/k rows: undo its RoPE row permutation over this many heads


@dataclass
class KeyLayout:
    """How a file's keys map to a model's tensor names: what a family's key reader answers."""

    name: str  # the layout, for people ("Comfy-Org repackaged (model.diffusion_model. prefix)")
    recipes: dict[str, Recipe]  # our name → how to read it
    unused: list[str]  # checkpoint keys no recipe uses (reported as unexpected)
    prefix: str = ""


def unpermute_rows(t: torch.Tensor, heads: int) -> torch.Tensor:
    """Rows [heads × (2 × half)] of a llama.cpp q/k weight (or its quantised bytes: rows are independent)
    back into Hugging Face's order: llama.cpp's converter interleaves each head's two rotary halves."""
    rows = t.shape[0]
    return t.reshape(heads, rows // heads // 2, 2, *t.shape[1:]).transpose(1, 2).reshape(t.shape)


def recipe_meta(source: TensorSource, recipe: Recipe, target: str) -> Meta:
    metas = [source.info(p) for p in recipe.parts]
    first = metas[0]
    if any(m.dtype != first.dtype or m.quant != first.quant or m.shape[1:] != first.shape[1:] for m in metas):
        raise StateDictError(f"parts of {target!r} with one dtype and matching trailing shapes",
                             ", ".join(f"{p} {m.dtype} {list(m.shape)}" for p, m in zip(recipe.parts, metas)),
                             "the file mixes tensors of different models or precisions")
    if len(metas) == 1:
        return first
    return Meta(first.dtype, (sum(m.shape[0] for m in metas), *first.shape[1:]), first.quant)


def to_store_dtype(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if t.dtype == dtype:
        return t
    if dtype in FP8_MAX:  # plain fp8 cast does not saturate: clamp first
        limit = FP8_MAX[dtype]
        return t.float().clamp_(-limit, limit).to(dtype)
    return t.to(dtype)


def make_filler(source: TensorSource, recipe: Recipe, store_dtype: torch.dtype):
    """A function writing the assembled tensor, in `store_dtype`, into a uint8 buffer of its size. A quantised
    tensor whose store dtype is uint8 keeps its bytes (decoded on the compute device at use)."""
    metas = [source.info(p) for p in recipe.parts]
    direct = all(m.dtype == store_dtype for m in metas) and not recipe.swap_halves

    def fill(out: torch.Tensor) -> None:
        if direct and recipe.unpermute_heads:  # kept as stored (bytes included), rows put back in order
            raw = torch.empty(metas[0].nbytes, dtype=torch.uint8)
            source.read_into(recipe.parts[0], raw)
            out.copy_(unpermute_rows(raw.reshape(metas[0].storage_shape[0], -1), recipe.unpermute_heads).reshape(-1))
            return
        if direct:  # bytes go straight from the file into the destination
            offset = 0
            for part, meta in zip(recipe.parts, metas):
                source.read_into(part, out[offset:offset + meta.nbytes])
                offset += meta.nbytes
            return
        t = torch.cat([source.read(p) for p in recipe.parts]) if len(recipe.parts) > 1 else source.read(recipe.parts[0])
        if recipe.unpermute_heads:
            t = unpermute_rows(t, recipe.unpermute_heads)
        if recipe.swap_halves:
            a, b = t.chunk(2, dim=0)
            t = torch.cat([b, a])
        out.copy_(to_store_dtype(t, store_dtype).contiguous().reshape(-1).view(torch.uint8))

    fill.computed = not direct
    return fill


def read_recipe(source: TensorSource, recipe: Recipe, store_dtype: torch.dtype) -> torch.Tensor:
    """The assembled tensor as a fresh CPU tensor."""
    meta = recipe_meta(source, recipe, recipe.parts[0])
    raw = torch.empty(Meta(store_dtype, meta.shape).nbytes, dtype=torch.uint8)
    make_filler(source, recipe, store_dtype)(raw)
    return raw.view(store_dtype).reshape(meta.shape) if raw.numel() else torch.empty(meta.shape, dtype=store_dtype)


def block_sources(source: TensorSource, recipes: dict[str, Recipe], metas: dict[str, Meta], n_blocks: int,
                  block_of, store_dtype_of):
    """Split a model's tensors into streamed blocks and fixed parts.

    block_of(name) → (block index, name inside the block) or None for the fixed parts;
    store_dtype_of(name, meta, in_block) → the dtype the tensor is stored and shipped in.
    Returns (per-block [(name, dtype, shape, filler)], {fixed name: (recipe, dtype)}).
    """
    blocks: list[list] = [[] for _ in range(n_blocks)]
    fixed: dict[str, tuple[Recipe, torch.dtype]] = {}
    for name, recipe in recipes.items():
        meta = metas[name]
        where = block_of(name)
        dtype = store_dtype_of(name, meta, where is not None)
        if where is None:
            fixed[name] = (recipe, dtype)
        else:
            index, local = where
            shape = meta.storage_shape if dtype == meta.dtype else meta.shape  # kept quantised: its bytes
            blocks[index].append((local, dtype, shape, make_filler(source, recipe, dtype)))
    return blocks, fixed


def mark_quantised(block_modules, blocks: list, metas: dict, block_of) -> None:
    """Tell each block Linear whose weight is kept as GGUF bytes its quantisation type: it decodes at use."""
    for name, meta in metas.items():
        where = block_of(name)
        if meta.quant and where is not None and name.endswith(".weight"):
            index, local = where
            entry = next((e for e in blocks[index] if e[0] == local), None)
            if entry is not None and entry[1] == torch.uint8:
                block_modules[index].get_submodule(local[: -len(".weight")]).quant = KINDS[meta.quant]
