"""Which DiT checkpoint layout a file uses, and how its keys map to our (Tencent) names.

Layouts users have:
- Tencent originals and kijai re-saves: Tencent names at the top level (`double_blocks.0.img_attn_qkv...`).
- Comfy-Org repackaged: the same names under `model.diffusion_model.` (or `diffusion_model.`), or none.
- diffusers (`transformer/diffusion_pytorch_model*.safetensors`): split q/k/v and other names.
fp8 files keep their fp8 tensors; Comfy `scaled_fp8` files add `X.scale_weight` per quantised Linear and
a `scaled_fp8` marker, and may carry `X.scale_input` (for fp8 matmuls; we do not need it).
"""

from __future__ import annotations

import re

from ...errors import UnsupportedLayoutError, WrongModelError, list_some
from ...loaders.model_kind import describe_model
from ...loaders.recipes import KeyLayout, Recipe
from ...loaders.tensor_source import TensorSource

TENCENT_ANCHOR = "img_in.proj.weight"
DIFFUSERS_ANCHOR = "x_embedder.proj.weight"
IGNORED_SUFFIXES = (".scale_input",)
IGNORED_KEYS = ("scaled_fp8",)

# Tencent name (with {n} for the block number) ← diffusers parts, concatenated along dim 0.
_REFINER = "context_embedder.token_refiner.refiner_blocks.{n}."
_DOUBLE = "transformer_blocks.{n}."
_SINGLE = "single_transformer_blocks.{n}."
DIFFUSERS_TO_TENCENT: list[tuple[str, tuple[str, ...]]] = [
    ("img_in.proj", ("x_embedder.proj",)),
    ("time_in.mlp.0", ("time_text_embed.timestep_embedder.linear_1",)),
    ("time_in.mlp.2", ("time_text_embed.timestep_embedder.linear_2",)),
    ("guidance_in.mlp.0", ("time_text_embed.guidance_embedder.linear_1",)),
    ("guidance_in.mlp.2", ("time_text_embed.guidance_embedder.linear_2",)),
    ("vector_in.in_layer", ("time_text_embed.text_embedder.linear_1",)),
    ("vector_in.out_layer", ("time_text_embed.text_embedder.linear_2",)),
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
    ("double_blocks.{n}.img_mod.linear", (_DOUBLE + "norm1.linear",)),
    ("double_blocks.{n}.txt_mod.linear", (_DOUBLE + "norm1_context.linear",)),
    ("double_blocks.{n}.img_attn_qkv", (_DOUBLE + "attn.to_q", _DOUBLE + "attn.to_k", _DOUBLE + "attn.to_v")),
    ("double_blocks.{n}.txt_attn_qkv", (_DOUBLE + "attn.add_q_proj", _DOUBLE + "attn.add_k_proj", _DOUBLE + "attn.add_v_proj")),
    ("double_blocks.{n}.img_attn_q_norm", (_DOUBLE + "attn.norm_q",)),
    ("double_blocks.{n}.img_attn_k_norm", (_DOUBLE + "attn.norm_k",)),
    ("double_blocks.{n}.txt_attn_q_norm", (_DOUBLE + "attn.norm_added_q",)),
    ("double_blocks.{n}.txt_attn_k_norm", (_DOUBLE + "attn.norm_added_k",)),
    ("double_blocks.{n}.img_attn_proj", (_DOUBLE + "attn.to_out.0",)),
    ("double_blocks.{n}.txt_attn_proj", (_DOUBLE + "attn.to_add_out",)),
    ("double_blocks.{n}.img_mlp.fc1", (_DOUBLE + "ff.net.0.proj",)),
    ("double_blocks.{n}.img_mlp.fc2", (_DOUBLE + "ff.net.2",)),
    ("double_blocks.{n}.txt_mlp.fc1", (_DOUBLE + "ff_context.net.0.proj",)),
    ("double_blocks.{n}.txt_mlp.fc2", (_DOUBLE + "ff_context.net.2",)),
    ("single_blocks.{n}.linear1", (_SINGLE + "attn.to_q", _SINGLE + "attn.to_k", _SINGLE + "attn.to_v", _SINGLE + "proj_mlp")),
    ("single_blocks.{n}.linear2", (_SINGLE + "proj_out",)),
    ("single_blocks.{n}.q_norm", (_SINGLE + "attn.norm_q",)),
    ("single_blocks.{n}.k_norm", (_SINGLE + "attn.norm_k",)),
    ("single_blocks.{n}.modulation.linear", (_SINGLE + "norm.linear",)),
    ("final_layer.linear", ("proj_out",)),
    ("final_layer.adaLN_modulation.1", ("norm_out.linear",)),  # halves swapped, see below
    # FramePack (diffusers names only: lllyasviel's folders and kijai's single files): kept as they are
    ("clean_x_embedder.proj", ("clean_x_embedder.proj",)),
    ("clean_x_embedder.proj_2x", ("clean_x_embedder.proj_2x",)),
    ("clean_x_embedder.proj_4x", ("clean_x_embedder.proj_4x",)),
    ("image_projection.up", ("image_projection.up",)),
    ("image_projection.down", ("image_projection.down",)),
]
SWAPPED = {"final_layer.adaLN_modulation.1"}
LAYOUT_NAMES = ("Tencent / kijai (top-level Tencent names)", "Comfy-Org repackaged (model.diffusion_model. prefix)",
                "diffusers (transformer/ folder or file)")


def _find_prefix(keys: set[str], anchor: str) -> str | None:
    """The prefix before `anchor` (empty, or ending in a dot: FramePack's clean_x_embedder.proj.weight also
    ends with the diffusers anchor)."""
    for k in sorted(keys, key=len):
        if k.endswith(anchor) and (len(k) == len(anchor) or k[-len(anchor) - 1] == "."):
            return k[: -len(anchor)]
    return None


def _ignored(key: str) -> bool:
    return key in IGNORED_KEYS or key.endswith(IGNORED_SUFFIXES)


def detect_dit_layout(source: TensorSource) -> KeyLayout:
    keys = set(source.keys())
    prefix = _find_prefix(keys, TENCENT_ANCHOR)
    if prefix is not None:
        return _tencent_layout(keys, prefix)
    prefix = _find_prefix(keys, DIFFUSERS_ANCHOR)
    if prefix is not None and any(k.startswith(prefix + "context_embedder.") for k in keys):
        return _diffusers_layout(keys, prefix)
    what = describe_model(keys)
    if "HunyuanVideo transformer" in what:
        raise UnsupportedLayoutError("one of the DiT layouts HyStream reads: " + "; ".join(LAYOUT_NAMES),
                                     f"HunyuanVideo-like keys without a patch embedding in {source.describe}, "
                                     f"e.g. {list_some(sorted(keys), 4)}", "use an unmodified release file")
    raise WrongModelError("a HunyuanVideo transformer (DiT) checkpoint", f"{what} in {source.describe}",
                          "pick the DiT file from models/diffusion_models "
                          "(e.g. hunyuan_video_t2v_720p_bf16.safetensors)")


def _tencent_layout(keys: set[str], prefix: str) -> KeyLayout:
    recipes, unused = {}, []
    for k in sorted(keys):
        local = k[len(prefix):] if k.startswith(prefix) else None
        if _ignored(k) or (local is not None and _ignored(local)):
            continue
        if local is None:
            unused.append(k)
        else:
            recipes[local] = Recipe((k,))
    name = LAYOUT_NAMES[1] if prefix else LAYOUT_NAMES[0]
    if prefix and prefix != "model.diffusion_model.":
        name = f"Tencent names under the prefix {prefix!r}"
    return KeyLayout(name, recipes, unused, prefix)


def _diffusers_layout(keys: set[str], prefix: str) -> KeyLayout:
    local = {k[len(prefix):] for k in keys if k.startswith(prefix)}
    numbers = {}  # block-number scope → the numbers present
    for scope in (_REFINER, _DOUBLE, _SINGLE):
        rx = re.compile(re.escape(scope).replace(re.escape("{n}"), r"(\d+)"))
        numbers[scope] = sorted({int(m.group(1)) for k in local if (m := rx.match(k))})
    recipes, used = {}, set()
    for target, parts in DIFFUSERS_TO_TENCENT:
        scope = next((sc for sc in numbers if parts[0].startswith(sc)), None)
        for n in (numbers[scope] if scope else [None]):
            t_name = target.format(n=n) if n is not None else target
            p_names = [p.format(n=n) if n is not None else p for p in parts]
            for suffix in (".weight", ".bias"):
                if not all(p + suffix in local for p in p_names):
                    continue  # absent, or half a fused projection: reported as missing/unexpected later
                recipes[t_name + suffix] = Recipe(tuple(prefix + p + suffix for p in p_names),
                                                  swap_halves=target in SWAPPED)
                used.update(p + suffix for p in p_names)
    unused = sorted(prefix + k for k in local - used if not _ignored(k))
    unused += sorted(k for k in keys if not k.startswith(prefix))
    return KeyLayout(LAYOUT_NAMES[2], recipes, unused, prefix)


def lora_aliases(cfg) -> dict[str, tuple[str, tuple[int, int] | None, bool]]:
    """diffusers module name → (our Linear, rows of the fused output it writes or None, halves swapped): how a
    diffusers/PEFT LoRA's modules land on the Tencent-named model (q/k/v/mlp parts are row slices)."""
    counts = {"txt_in.individual_token_refiner.blocks.{n}": cfg.depth_refiner, "double_blocks.{n}": cfg.depth_double,
              "single_blocks.{n}": cfg.depth_single}
    sizes = {3: [cfg.hidden] * 3, 4: [cfg.hidden] * 3 + [cfg.single_mlp_hidden]}  # fused parts' rows
    index = {}
    for target, parts in DIFFUSERS_TO_TENCENT:
        scope = next((s for s in counts if target.startswith(s)), None)
        for n in range(counts[scope]) if scope else [None]:
            t = target.format(n=n) if n is not None else target
            for i, p in enumerate(parts):
                rows = None
                if len(parts) > 1:
                    start = sum(sizes[len(parts)][:i])
                    rows = (start, start + sizes[len(parts)][i])
                index[p.format(n=n) if n is not None else p] = (t, rows, target in SWAPPED)
    return index
