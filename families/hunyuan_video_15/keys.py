"""Which HunyuanVideo 1.5 DiT layout a file uses, and how its keys map to our names.

Our names are Tencent's original ones with each dual-stream block's attention projections fused, as the
Comfy-Org repackaged files store them (`double_blocks.N.img_attn_qkv`, rows q | k | v):
- Comfy-Org repackaged and city96's GGUFs: our names (prefix `model.diffusion_model.` or none);
- Tencent originals (`transformer/<version>/diffusion_pytorch_model.safetensors`): `img_attn_q`, `_k`, `_v`
  apart — read as the row ranges of the fused tensor, straight from the file;
- diffusers folders (`HunyuanVideo15Transformer3DModel`): diffusers names, q/k/v apart, the final norm's
  halves in [scale, shift] order (ours: [shift, scale]).
"""

from __future__ import annotations

import re

from ...errors import WrongModelError
from ...loaders.model_kind import describe_model
from ...loaders.recipes import KeyLayout, Recipe
from ...loaders.tensor_source import TensorSource

ANCHOR = "vision_in.proj.0.weight"  # only a 1.5 DiT has the SigLIP projection (HunyuanImage 2.1 has ByT5 only)
DIFFUSERS_ANCHOR = "image_embedder.norm_in.weight"
IGNORED_SUFFIXES = (".scale_input",)
IGNORED_KEYS = ("scaled_fp8",)
LAYOUT_NAMES = ("Tencent (split q/k/v)", "Comfy-Org repackaged (fused q/k/v)", "diffusers (transformer/ folder)")

_REFINER = "context_embedder.token_refiner.refiner_blocks.{n}."
_BLOCK = "transformer_blocks.{n}."
# our name (with {n} for the block number) ← diffusers parts, concatenated along dim 0
DIFFUSERS_TO_OURS: list[tuple[str, tuple[str, ...]]] = [
    ("img_in.proj", ("x_embedder.proj",)),
    ("vision_in.proj.0", ("image_embedder.norm_in",)),
    ("vision_in.proj.1", ("image_embedder.linear_1",)),
    ("vision_in.proj.3", ("image_embedder.linear_2",)),
    ("vision_in.proj.4", ("image_embedder.norm_out",)),
    ("txt_in.input_embedder", ("context_embedder.proj_in",)),
    ("txt_in.t_embedder.mlp.0", ("context_embedder.time_text_embed.timestep_embedder.linear_1",)),
    ("txt_in.t_embedder.mlp.2", ("context_embedder.time_text_embed.timestep_embedder.linear_2",)),
    ("txt_in.c_embedder.linear_1", ("context_embedder.time_text_embed.text_embedder.linear_1",)),
    ("txt_in.c_embedder.linear_2", ("context_embedder.time_text_embed.text_embedder.linear_2",)),
    ("txt_in.individual_token_refiner.blocks.{n}.norm1", (_REFINER + "norm1",)),
    ("txt_in.individual_token_refiner.blocks.{n}.norm2", (_REFINER + "norm2",)),
    ("txt_in.individual_token_refiner.blocks.{n}.self_attn_qkv",
     (_REFINER + "attn.to_q", _REFINER + "attn.to_k", _REFINER + "attn.to_v")),
    ("txt_in.individual_token_refiner.blocks.{n}.self_attn_proj", (_REFINER + "attn.to_out.0",)),
    ("txt_in.individual_token_refiner.blocks.{n}.mlp.fc1", (_REFINER + "ff.net.0.proj",)),
    ("txt_in.individual_token_refiner.blocks.{n}.mlp.fc2", (_REFINER + "ff.net.2",)),
    ("txt_in.individual_token_refiner.blocks.{n}.adaLN_modulation.1", (_REFINER + "norm_out.linear",)),
    ("byt5_in.layernorm", ("context_embedder_2.norm",)),
    ("byt5_in.fc1", ("context_embedder_2.linear_1",)),
    ("byt5_in.fc2", ("context_embedder_2.linear_2",)),
    ("byt5_in.fc3", ("context_embedder_2.linear_3",)),
    ("time_in.mlp.0", ("time_embed.timestep_embedder.linear_1",)),
    ("time_in.mlp.2", ("time_embed.timestep_embedder.linear_2",)),
    ("time_r_in.mlp.0", ("time_embed.timestep_embedder_r.linear_1",)),
    ("time_r_in.mlp.2", ("time_embed.timestep_embedder_r.linear_2",)),
    ("cond_type_embedding", ("cond_type_embed",)),
    ("double_blocks.{n}.img_mod.linear", (_BLOCK + "norm1.linear",)),
    ("double_blocks.{n}.txt_mod.linear", (_BLOCK + "norm1_context.linear",)),
    ("double_blocks.{n}.img_attn_qkv", (_BLOCK + "attn.to_q", _BLOCK + "attn.to_k", _BLOCK + "attn.to_v")),
    ("double_blocks.{n}.txt_attn_qkv", (_BLOCK + "attn.add_q_proj", _BLOCK + "attn.add_k_proj", _BLOCK + "attn.add_v_proj")),
    ("double_blocks.{n}.img_attn_q_norm", (_BLOCK + "attn.norm_q",)),
    ("double_blocks.{n}.img_attn_k_norm", (_BLOCK + "attn.norm_k",)),
    ("double_blocks.{n}.txt_attn_q_norm", (_BLOCK + "attn.norm_added_q",)),
    ("double_blocks.{n}.txt_attn_k_norm", (_BLOCK + "attn.norm_added_k",)),
    ("double_blocks.{n}.img_attn_proj", (_BLOCK + "attn.to_out.0",)),
    ("double_blocks.{n}.txt_attn_proj", (_BLOCK + "attn.to_add_out",)),
    ("double_blocks.{n}.img_mlp.fc1", (_BLOCK + "ff.net.0.proj",)),
    ("double_blocks.{n}.img_mlp.fc2", (_BLOCK + "ff.net.2",)),
    ("double_blocks.{n}.txt_mlp.fc1", (_BLOCK + "ff_context.net.0.proj",)),
    ("double_blocks.{n}.txt_mlp.fc2", (_BLOCK + "ff_context.net.2",)),
    ("final_layer.linear", ("proj_out",)),
    ("final_layer.adaLN_modulation.1", ("norm_out.linear",)),  # halves swapped
]
SWAPPED = {"final_layer.adaLN_modulation.1"}
TENCENT_SPLIT = {"img_attn_qkv": ("img_attn_q", "img_attn_k", "img_attn_v"),
                 "txt_attn_qkv": ("txt_attn_q", "txt_attn_k", "txt_attn_v")}


def _ignored(key: str) -> bool:
    return key in IGNORED_KEYS or key.endswith(IGNORED_SUFFIXES)


def _prefix(keys, anchor: str) -> str | None:
    hits = [k[: -len(anchor)] for k in keys if k.endswith(anchor)]
    return min(hits, key=len) if hits else None


def detect_dit_layout(source: TensorSource) -> KeyLayout:
    keys = set(source.keys())
    prefix = _prefix(keys, ANCHOR)
    if prefix is not None:
        return _tencent_layout(keys, prefix)
    prefix = _prefix(keys, DIFFUSERS_ANCHOR)
    if prefix is not None:
        return _diffusers_layout(keys, prefix)
    raise WrongModelError("a HunyuanVideo 1.5 transformer (DiT)", f"{describe_model(keys)} in {source.describe}",
                          "pick a hunyuanvideo1.5_*.safetensors DiT from models/diffusion_models")


def _tencent_layout(keys: set[str], prefix: str) -> KeyLayout:
    recipes, unused, split = {}, [], False
    local = {k[len(prefix):]: k for k in keys if k.startswith(prefix) and not _ignored(k[len(prefix):])}
    for name, key in sorted(local.items()):
        m = re.match(r"(double_blocks\.\d+)\.(img|txt)_attn_([qkv])\.(weight|bias)$", name)
        if m:  # Tencent's split projections: read as the fused tensor's row ranges
            split = True
            block, side, part, kind = m.groups()
            if part == "q":
                parts = tuple(local.get(f"{block}.{side}_attn_{p}.{kind}") for p in "qkv")
                if all(parts):
                    recipes[f"{block}.{side}_attn_qkv.{kind}"] = Recipe(parts)
                else:
                    unused.append(key)
            continue
        recipes[name] = Recipe((key,))
    unused += sorted(k for k in keys if not k.startswith(prefix) and not _ignored(k))
    name = LAYOUT_NAMES[0] if split else LAYOUT_NAMES[1]
    return KeyLayout(name + (f" under {prefix!r}" if prefix else ""), recipes, unused, prefix)


def _diffusers_layout(keys: set[str], prefix: str) -> KeyLayout:
    local = {k[len(prefix):] for k in keys if k.startswith(prefix)}
    numbers = {}
    for scope in (_REFINER, _BLOCK):
        rx = re.compile(re.escape(scope).replace(re.escape("{n}"), r"(\d+)"))
        numbers[scope] = sorted({int(m.group(1)) for k in local if (m := rx.match(k))})
    recipes, used = {}, set()
    for target, parts in DIFFUSERS_TO_OURS:
        scope = next((sc for sc in numbers if parts[0].startswith(sc)), None)
        for n in (numbers[scope] if scope else [None]):
            t_name = target.format(n=n) if n is not None else target
            p_names = [p.format(n=n) if n is not None else p for p in parts]
            for suffix in (".weight", ".bias"):
                if all(p + suffix in local for p in p_names):
                    recipes[t_name + suffix] = Recipe(tuple(prefix + p + suffix for p in p_names),
                                                      swap_halves=target in SWAPPED)
                    used.update(p + suffix for p in p_names)
    unused = sorted(prefix + k for k in local - used if not _ignored(k))
    unused += sorted(k for k in keys if not k.startswith(prefix))
    return KeyLayout(LAYOUT_NAMES[2], recipes, unused, prefix)


def lora_aliases(cfg) -> dict[str, tuple[str, tuple[int, int] | None, bool]]:
    """Other module names LoRAs use → (our Linear, rows of the fused output it writes, halves swapped):
    diffusers' (to_q/…), and Tencent's split q/k/v (musubi-tuner's 1.5 LoRAs train on those)."""
    h = cfg.hidden
    index = {}
    for n in range(cfg.depth):
        for side, parts in (("img", ("attn.to_q", "attn.to_k", "attn.to_v")),
                            ("txt", ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"))):
            for i, (p, letter) in enumerate(zip(parts, "qkv")):
                rows = (i * h, (i + 1) * h)
                index[f"transformer_blocks.{n}.{p}"] = (f"double_blocks.{n}.{side}_attn_qkv", rows, False)
                index[f"double_blocks.{n}.{side}_attn_{letter}"] = (f"double_blocks.{n}.{side}_attn_qkv", rows, False)
    counts = {"txt_in.individual_token_refiner.blocks.{n}": cfg.depth_refiner, "double_blocks.{n}": cfg.depth}
    for target, parts in DIFFUSERS_TO_OURS:
        if len(parts) > 1 and target.startswith("double_blocks"):
            continue  # done above
        scope = next((s for s in counts if target.startswith(s)), None)
        for n in range(counts[scope]) if scope else [None]:
            t = target.format(n=n) if n is not None else target
            for i, p in enumerate(parts):
                rows = (i * h, (i + 1) * h) if len(parts) > 1 else None
                index[p.format(n=n) if n is not None else p] = (t, rows, target in SWAPPED)
    return index
