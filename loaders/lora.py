"""LoRA files for the DiT, in the key formats people share, applied without a second copy of the model.

A LoRA never touches the stored weights: when an adapted Linear runs, its weight is upcast on the compute
device as always and the low-rank product (B·A · strength · alpha/rank, placed in its rows for a part of a
fused projection) is added to that transient copy. That is exactly the hand-merged model, works the same
for bf16 and fp8-stored weights and for resident and streamed blocks, stacks with other LoRAs, costs
one small matmul per layer, and a strength change needs no reload. Adapters are attached for one sampling run and removed afterwards, so the same
loaded DiT serves graphs with and without LoRAs.

Formats (told apart per key): diffusers/PEFT (`transformer.…lora_A/lora_B`, diffusers module names —
fused Tencent projections take the q/k/v/mlp parts as row slices), Comfy
(`diffusion_model.<tencent>.lora_up/lora_down` + `.alpha`), musubi-tuner/kohya
(`lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight` + `.alpha`), diffusion-pipe
(`transformer.<tencent>.lora_A/lora_B`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import InputError, WrongModelError, list_some
from ..models.layers import Linear, LowRankAdapter
from .dit_layout import DIFFUSERS_TO_TENCENT, SWAPPED
from .model_kind import describe_model
from .tensor_source import open_checkpoint

log = logging.getLogger("hystream")

PREFIXES = ("base_model.model.", "model.diffusion_model.", "diffusion_model.", "transformer.", "lora_unet_",
            "lora_transformer_")
SUFFIXES = {
    ".lora_A.weight": "down", ".lora_B.weight": "up", ".lora_down.weight": "down", ".lora_up.weight": "up",
    ".lora_A.default.weight": "down", ".lora_B.default.weight": "up", ".alpha": "alpha",
}


@dataclass
class LoRAPart:
    target: str  # our Linear's name
    down: torch.Tensor  # [rank, in]
    up: torch.Tensor  # [rows, rank]
    scale: float  # alpha / rank
    rows: tuple[int, int] | None = None  # the slice of the fused output this part writes, or all


@dataclass
class LoRA:
    name: str
    parts: list[LoRAPart] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)  # file keys applied nowhere
    tensors: int = 0  # keys in the file

    @property
    def applied_tensors(self) -> int:
        return self.tensors - len(self.unmatched)

    def summary(self) -> str:
        """What the user is told: everything applied, or how much was and which keys were not."""
        if not self.unmatched:
            return f"LoRA {self.name}: all {self.tensors} tensors applied to {len(self.parts)} layers."
        return (f"LoRA {self.name}: PARTLY applied — {self.applied_tensors} of {self.tensors} tensors "
                f"({len(self.parts)} layers); {len(self.unmatched)} not applied, e.g. "
                f"{list_some(sorted(self.unmatched), 4)}. Check that the LoRA was trained for HunyuanVideo T2V.")


# Key fragments (module names with '.' → '_') that only other model families' LoRAs have. Flux shares
# most of HunyuanVideo's names (and, at full size, its shapes), so its own names are what tell it apart.
FOREIGN_FAMILIES = [
    ("Flux", re.compile(r"(^|_)(img|txt)_mlp_[02]$|(^|_)(img|txt)_mod_lin$|(^|_)modulation_lin$|"
                        r"(^|_)(img|txt)_attn_norm_(query|key)_norm$")),
    ("Stable Diffusion / SDXL", re.compile(r"(^|_)(input|output)_blocks_\d|(^|_)(down|up)_blocks_\d+_(attentions|resnets)|"
                                           r"(^|_)mid_block_|^lora_te\d?_|(^|_)text_model_encoder_layers")),
    ("Wan", re.compile(r"(^|_)blocks_\d+_(self_attn|cross_attn)_(q|k|v|o)$|(^|_)blocks_\d+_ffn_[02]$")),
    ("LTX-Video", re.compile(r"(^|_)transformer_blocks_\d+_attn[12]_")),
]
FLUX_DEPTHS = (19, 38)  # Flux's double/single block counts (HunyuanVideo: 20/40)


def foreign_family(modules: list[str]) -> tuple[str, list[str]] | None:
    """(family, example keys) when a LoRA's module names belong to another model, else None."""
    flat = [_strip(m).replace(".", "_").lower() for m in modules]
    for family, pattern in FOREIGN_FAMILIES:
        hits = [m for m, f in zip(modules, flat) if pattern.search(f)]
        if hits:
            return family, hits
    # Flux LoRAs on the blocks both models share (attention, linear1/2; diffusers names are the same as
    # HunyuanVideo's throughout) are told apart by depth: Flux has 19 + 38 blocks, HunyuanVideo 20 + 40
    deepest = {}
    for f in flat:
        if (m := re.match(r"(single_transformer_blocks|transformer_blocks|double_blocks|single_blocks)_(\d+)_", f)):
            kind = "single" if m.group(1).startswith("single") else "double"
            deepest[kind] = max(deepest.get(kind, -1), int(m.group(2)))
    if (deepest.get("double"), deepest.get("single")) == (FLUX_DEPTHS[0] - 1, FLUX_DEPTHS[1] - 1):
        return "Flux", [f"double blocks up to {FLUX_DEPTHS[0] - 1} and single blocks up to {FLUX_DEPTHS[1] - 1} "
                        f"(Flux's {FLUX_DEPTHS[0]} + {FLUX_DEPTHS[1]} blocks; HunyuanVideo has 20 + 40)"]
    return None


def _split(key: str) -> tuple[str, str] | None:
    for suffix, kind in SUFFIXES.items():
        if key.endswith(suffix):
            return key[: -len(suffix)], kind
    return None


def _strip(name: str) -> str:
    for p in PREFIXES:
        if name.startswith(p):
            return name[len(p):]
    return name


def _diffusers_index(model: nn.Module) -> dict[str, tuple[str, int, int, bool]]:
    """diffusers module name → (our Linear, part index, part count, halves swapped)."""
    cfg = model.cfg
    counts = {"txt_in.individual_token_refiner.blocks.{n}": cfg.depth_refiner, "double_blocks.{n}": cfg.depth_double,
              "single_blocks.{n}": cfg.depth_single}
    index = {}
    for target, parts in DIFFUSERS_TO_TENCENT:
        scope = next((s for s in counts if target.startswith(s)), None)
        for n in range(counts[scope]) if scope else [None]:
            t = target.format(n=n) if n is not None else target
            for i, p in enumerate(parts):
                index[p.format(n=n) if n is not None else p] = (t, i, len(parts), target in SWAPPED)
    return index


def _rows(linear: Linear, part: int, count: int) -> tuple[int, int] | None:
    if count == 1:
        return None
    hidden = linear.in_features
    sizes = [hidden] * 3 + ([linear.out_features - 3 * hidden] if count == 4 else [])
    start = sum(sizes[:part])
    return start, start + sizes[part]


def load_lora(path: str, model: nn.Module) -> LoRA:
    """Read a LoRA file and match its keys to `model`'s Linears. Raises if nothing matches; warns (with
    the count and examples) if some keys do not."""
    source = open_checkpoint(path)
    try:
        keys = source.keys()
        groups: dict[str, dict[str, str]] = {}
        other = []
        for k in keys:
            split = _split(k)
            if split is None:
                other.append(k)
            else:
                groups.setdefault(split[0], {})[split[1]] = k
        if not groups:
            raise InputError("a LoRA file (lora_A/lora_B, lora_down/lora_up keys)",
                             f"{describe_model(keys)} in {source.describe}",
                             "pick a LoRA from models/loras; full models go in their own loader")
        foreign = foreign_family(list(groups))
        if foreign is not None:
            family, examples = foreign
            raise WrongModelError("a HunyuanVideo (T2V) LoRA", f"a {family} LoRA in {source.describe} "
                                  f"(its keys name {list_some(examples, 3)})",
                                  f"use a LoRA trained for HunyuanVideo; {family} LoRAs would apply only partly "
                                  "and change the video unpredictably")
        linears = {n: m for n, m in model.named_modules() if isinstance(m, Linear)}
        underscored = {n.replace(".", "_"): n for n in linears}
        diffusers = _diffusers_index(model)
        lora = LoRA(os.path.basename(str(path)), tensors=len(keys))
        for module, kinds in groups.items():
            if "down" not in kinds or "up" not in kinds:
                lora.unmatched.extend(kinds.values())
                continue
            name = _strip(module)
            rows, swap = None, False
            target = name if name in linears else underscored.get(name)
            if target is None and name in diffusers:
                target, part, count, swap = diffusers[name]
                rows = _rows(linears[target], part, count)
            if target is None:
                lora.unmatched.extend(kinds.values())
                continue
            down, up = source.read(kinds["down"]).float(), source.read(kinds["up"]).float()
            linear = linears[target]
            want_rows = (rows[1] - rows[0]) if rows else linear.out_features
            if down.shape[1] != linear.in_features or up.shape[0] != want_rows or up.shape[1] != down.shape[0]:
                raise InputError(f"LoRA shapes for {target}: down [r, {linear.in_features}], up [{want_rows}, r]",
                                 f"down {list(down.shape)}, up {list(up.shape)} in {source.describe}",
                                 "this LoRA was trained for another model (or another HunyuanVideo variant)")
            if swap:  # diffusers' final norm is [scale, shift], ours [shift, scale]
                a, b = up.chunk(2, dim=0)
                up = torch.cat([b, a])
            rank = down.shape[0]
            alpha = float(source.read(kinds["alpha"]).float()) if "alpha" in kinds else float(rank)
            lora.parts.append(LoRAPart(target, down, up, alpha / rank, rows))
        lora.unmatched.extend(other)
    finally:
        source.close()
    if not lora.parts:
        raise InputError("LoRA keys that match HunyuanVideo's transformer",
                         f"none of {len(keys)} keys matched, e.g. {list_some(sorted(keys), 4)}",
                         "this LoRA is for another model; HunyuanVideo LoRAs name double_blocks/single_blocks "
                         "(Tencent) or transformer_blocks (diffusers)")
    if lora.unmatched:
        log.warning("HyStream: %s", lora.summary())
    return lora


@contextlib.contextmanager
def attach_loras(model: nn.Module, loras, device=None, dtype=None):
    """Attach (LoRA, strength) pairs to `model`'s Linears for the duration of the block."""
    device = device or getattr(model, "device", "cpu")
    dtype = dtype or getattr(model, "compute_dtype", torch.float32)
    attached: list[tuple[Linear, LowRankAdapter]] = []
    try:
        for lora, strength in loras:
            if strength == 0:
                continue
            for part in lora.parts:
                module = model.get_submodule(part.target)
                adapter = LowRankAdapter(part.down, part.up, strength * part.scale, part.rows, device, dtype)
                module.lora.append(adapter)
                attached.append((module, adapter))
        yield
    finally:
        for module, adapter in attached:
            module.lora.remove(adapter)
