"""LoRA files for the DiT, in the key formats people share, applied without a second copy of the model.

A LoRA never touches the stored weights: when an adapted Linear runs, its weight is upcast on the compute
device as always and the low-rank product (B·A · strength · alpha/rank, placed in its rows for a part of a
fused projection) is added to that transient copy. That is exactly the hand-merged model, works the same
for bf16 and fp8-stored weights and for resident and streamed blocks, stacks with other LoRAs, costs
one small matmul per layer, and a strength change needs no reload. Adapters are attached for one sampling run and removed afterwards, so the same
loaded DiT serves graphs with and without LoRAs.

Formats (told apart per key): diffusers/PEFT (`transformer.…lora_A/lora_B`, diffusers module names —
the model's family maps them onto its own Linears, fused projections taking their parts as row slices:
`model.lora_aliases()`), Comfy (`diffusion_model.<ours>.lora_up/lora_down` + `.alpha`), musubi-tuner/kohya
(`lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight` + `.alpha`), diffusion-pipe
(`transformer.<ours>.lora_A/lora_B`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import InputError, WrongModelError, list_some
from ..models.layers import Linear, LowRankAdapter
from .checkpoint import open_checkpoint
from .model_kind import describe_model, foreign_family

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
                f"{list_some(sorted(self.unmatched), 4)}. Check that the LoRA was trained for this model.")


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


def load_lora(path: str, model: nn.Module) -> LoRA:
    """Read a LoRA file and match its keys to `model`'s Linears (its own names, or the aliases its family
    gives: `model.lora_aliases()` → {other module name: (our Linear, row range or None, halves swapped)}, e.g.
    diffusers' names, or split projections a family stores fused), dotted or kohya-underscored.
    Raises if nothing matches; warns (with the count and examples) if some keys do not."""
    title = getattr(model, "title", "this model")
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
        foreign = foreign_family(list(groups), _strip)
        if foreign is not None:
            family, examples = foreign
            raise WrongModelError(f"a {title} LoRA", f"a {family} LoRA in {source.describe} "
                                  f"(its keys name {list_some(examples, 3)})",
                                  f"use a LoRA trained for {title}; {family} LoRAs would apply only partly "
                                  "and change the video unpredictably")
        linears = {n: m for n, m in model.named_modules() if isinstance(m, Linear)}
        underscored = {n.replace(".", "_"): n for n in linears}
        aliases = model.lora_aliases()
        aliases.update({n.replace(".", "_"): a for n, a in list(aliases.items())})  # kohya writes them underscored
        lora = LoRA(os.path.basename(str(path)), tensors=len(keys))
        for module, kinds in groups.items():
            if "down" not in kinds or "up" not in kinds:
                lora.unmatched.extend(kinds.values())
                continue
            name = _strip(module)
            rows, swap = None, False
            target = name if name in linears else underscored.get(name)
            if target is None and name in aliases:
                target, rows, swap = aliases[name]
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
            if swap:  # e.g. diffusers' final norm is [scale, shift] where ours is [shift, scale]
                a, b = up.chunk(2, dim=0)
                up = torch.cat([b, a])
            rank = down.shape[0]
            alpha = float(source.read(kinds["alpha"]).float()) if "alpha" in kinds else float(rank)
            lora.parts.append(LoRAPart(target, down, up, alpha / rank, rows))
        lora.unmatched.extend(other)
    finally:
        source.close()
    if not lora.parts:
        raise InputError(f"LoRA keys that match {title}'s transformer",
                         f"none of {len(keys)} keys matched, e.g. {list_some(sorted(keys), 4)}",
                         f"this LoRA is for another model; {title} LoRAs name {model.lora_hint()}")
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
