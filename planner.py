"""Before running: how much device memory each stage needs at a size, whether it fits a budget, and the
settings that make it fit (`python -m hystream plan`), for any model family.

Every figure comes from the family's real model classes with the real shapes (its memory model, e.g.
families/hunyuan_video/planning.py): weights from the skeletons' tensor sizes in the dtype they are stored
in, activations from fake-tensor runs of the same code that will run (memory_probe; the DiT through its
family's estimator, which the samplers' automatic budget uses too).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from dataclasses import dataclass

import torch

from .errors import BudgetError
from .families import registry
from .memory_probe import LiveBytes, fake_mode, flash_attention
from .models.lean import auto_chunk
from .offload.budget import plan_residency
from .offload.units import StreamUnits
from .pipeline import check_video_size
from .quant.kinds import KINDS
from .sizes import GIB, automatic_budget, budget_margin
from .vae.tiling import DEFAULT_TILES, TileSpec

# What a card holds before any stage: the CUDA context with PyTorch's kernels loaded (~0.3-0.45 GiB on CUDA 12
# with lazy module loading) and the cuBLAS/cuBLASLt workspaces (4-32 MiB per stream); 0.5 GiB covers both
# until a GPU run measures them (bench/gpu_check.py reports the context's size).
CUDA_CONTEXT_BYTES = GIB // 2


def card_budget(card_gib: float) -> tuple[int, int, int]:
    """(the budget the loaders' automatic budget plans with, the CUDA context, the margin) on a card of
    `card_gib` GiB with nothing else on it: its free memory after the context, less the budget margin."""
    usable = max(0, int(card_gib * GIB) - CUDA_CONTEXT_BYTES)
    return automatic_budget(usable), CUDA_CONTEXT_BYTES, budget_margin(usable)
FLASH_CAPABLE = (8, 0)  # sm80+: bf16 compute and the flash kernel


@dataclass
class StagePlan:
    stage: str
    weights: int
    activations: int
    settings: str
    fits: bool | None = None
    minimum: int | None = None  # the least this stage can run in, when it differs from the planned total

    @property
    def total(self) -> int:
        return self.weights + self.activations


def dit_weights(family, weight_dtype: str, cfg=None) -> tuple[list[int], int]:
    """(bytes of each streamed block, bytes of the fixed parts) as stored: bf16, fp8 for the Linears the family
    lets fp8 store, or a GGUF type's bytes for every block Linear (GGUF files quantise them all)."""
    memory = family.memory()
    cfg = cfg or memory.dit_config()
    spec = memory.dit_spec
    model = memory.dit(cfg)
    quant = KINDS.get(weight_dtype)
    units = StreamUnits(model.blocks)  # as the loader streams them: blocks that run in parts, as parts
    blocks, fixed = [0] * len(units), 0
    for name, p in model.named_parameters():
        where = spec.block_of(cfg, name)
        linear = where is not None and name.endswith(".weight") and p.dim() == 2
        if linear and quant is not None:
            size = p.shape[0] * quant.row_bytes(p.shape[1])
        elif linear and weight_dtype == "fp8_e4m3fn" and spec.quantisable(name, tuple(p.shape)):
            size = p.numel() + 4  # + its fp32 scale
        else:
            size = p.numel() * 2
        if where is None:
            fixed += size
        else:
            blocks[units.unit_of(*where)[0]] += size
    return blocks, fixed


def plan_dit(width: int, height: int, frames: int, vram: int | None, *, weight_dtype: str = "bf16",
             prefetch: int = 1, text_tokens: int | None = None, cfg=None, capability: tuple[int, int] = FLASH_CAPABLE,
             lora_rank: int = 0, family=None) -> StagePlan:
    """capability: the GPU's (sm); before sm80 the DiT computes in fp32 (no bf16 kernels) and attention
    runs SDPA's memory-efficient kernel; the planner uses the model's own dtype and kernel rules."""
    family = family or registry.default()
    memory = family.memory()
    cfg = cfg or memory.dit_config()
    text_tokens = memory.text_tokens if text_tokens is None else text_tokens
    shape = family.latent.shape(width, height, frames)
    model = memory.dit(cfg)
    model.device, model.sdpa_capability = torch.device("cuda", 0), tuple(capability)
    model.compute_dtype = torch.bfloat16 if tuple(capability) >= FLASH_CAPABLE else torch.float32
    model.block_weight_dtype = (weight_dtype if weight_dtype in KINDS else
                                torch.float8_e4m3fn if weight_dtype == "fp8_e4m3fn" else torch.bfloat16)
    blocks, fixed = dit_weights(family, weight_dtype, cfg)
    tokens = model.image_tokens(shape) + text_tokens
    if vram is not None and model.attention_kernel() == "math":
        model.chunk_tokens = model.choose_chunk(shape, text_tokens, vram - fixed - 2 * max(blocks))
    act = model.activation_bytes(shape, text_tokens, lora_rank=lora_rank)
    minimum = fixed + 2 * max(blocks) + act
    chunk = (f"chunks of {model.chunk_tokens or auto_chunk(tokens):,} of {tokens:,} tokens, "
             f"{str(model.compute_dtype).replace('torch.', '')} compute, {model.attention_kernel()} attention")
    if vram is None:
        return StagePlan("DiT", fixed + 2 * max(blocks), act,
                         f"prefetch 1, every block streamed (double blocks in parts) through 2 slots, {chunk}", None)
    try:  # with the copies overlapping the compute (prefetch ≥ 1) if at all possible
        plan = plan_residency(blocks, vram, fixed_bytes=fixed, activation_bytes=act, prefetch=prefetch, what="the DiT",
                              min_prefetch=min(1, prefetch))
    except BudgetError:
        plan = None
    if plan is None and prefetch >= 1:
        with contextlib.suppress(BudgetError):
            plan = plan_residency(blocks, vram, fixed_bytes=fixed, activation_bytes=act, prefetch=0, what="the DiT")
            return StagePlan("DiT", plan.total_bytes - act, act, "prefetch 0 only: every block copy stalls the "
                             f"compute (half speed on PCIe); {chunk}", True)
    if plan is None:
        return StagePlan("DiT", fixed + 2 * max(blocks), act, f"needs {minimum / GIB:.2f} GiB; lower the size or "
                         "frames" + (", or use weight_dtype fp8_e4m3fn" if weight_dtype == "bf16" else ""),
                         False, fixed + max(blocks) + act)
    return StagePlan("DiT", plan.total_bytes - act, act,
                     f"prefetch {plan.prefetch}, {len(plan.resident)}/{len(blocks)} streamed units resident, {chunk}", True)


def plan_text_encoder(vram: int | None, *, fp8: bool = True, family=None) -> StagePlan:
    weights, act, settings = (family or registry.default()).memory().text_stage(fp8)
    plan = StagePlan("text encoder", weights, act, settings)
    plan.fits = None if vram is None else plan.total <= vram
    return plan


@functools.lru_cache(maxsize=32)
def vae_tile_peak(tile: tuple[int, int, int], dtype: torch.dtype = torch.bfloat16, family_name: str | None = None) -> int:
    """Peak bytes of one decoder tile (latent t, h, w), measured on fake tensors (weights excluded)."""
    from torch.func import functional_call

    family = registry.named(family_name) if family_name else registry.default()
    decoder = family.memory().vae_decoder()
    with flash_attention(), fake_mode():
        params = {n: torch.empty(p.shape, dtype=dtype, device="cuda") for n, p in decoder.named_parameters()}
        z = torch.empty(1, family.latent.channels, *tile, dtype=dtype, device="cuda")
        probe = LiveBytes(existing=[*params.values(), z])
        with probe:
            out = functional_call(decoder, params, (z,))
        del out
    return probe.peak


def plan_vae(width: int, height: int, frames: int, vram: int | None, spec: TileSpec = DEFAULT_TILES,
             family=None, cap: int | None = None) -> StagePlan:
    """The largest tiles (from `spec` down) whose decode fits `vram` and, when given, `cap`: the bytes another
    stage needs anyway (plan_all passes the DiT's), so the VAE never decides how large a card must be."""
    family = family or registry.default()
    fmt = family.latent
    weights = sum(p.numel() for p in family.memory().vae_decoder().parameters()) * 2
    _, t, h, w = fmt.shape(width, height, frames)[1:]
    candidates = [spec] + [TileSpec(s, max(32, s // 4), 64, 16) for s in (192, 128, 96, 64) if s < spec.size] + \
        [TileSpec(64, 16, tt, 4) for tt in (32, 16, 8)]
    limit = min(x for x in (vram, cap) if x is not None) if (vram, cap) != (None, None) else None
    for c in candidates:
        size_l, _, temporal_l, _ = c.latent(fmt.space, fmt.time)
        tile = (min(t, temporal_l + 1), min(h, size_l), min(w, size_l))
        act = vae_tile_peak(tile, torch.bfloat16, family.name)
        if limit is None or weights + act <= limit:
            within = f" (within the DiT stage's {cap / GIB:.2f} GiB)" if cap is not None and c is not spec else ""
            settings = f"tiles {c.size} px / {c.overlap}, {c.temporal} frames / {c.temporal_overlap}{within}"
            return StagePlan("VAE decode", weights, act, settings, None if vram is None else True)
    settings = f"tiles {c.size} px / {c.overlap}, {c.temporal} frames / {c.temporal_overlap}"
    if vram is None or weights + act <= vram:  # over the DiT's, under the card's: the VAE is the largest stage
        return StagePlan("VAE decode", weights, act, settings + " (more than the DiT stage: the decoder's weights)",
                         None if vram is None else True)
    return StagePlan("VAE decode", weights, act, "even 64 px × 8-frame tiles do not fit", False)


def plan_all(width: int, height: int, frames: int, vram_gb: float | None = None, *, weight_dtype: str = "bf16",
             prefetch: int = 1, capability: tuple[int, int] = FLASH_CAPABLE, family=None) -> list[StagePlan]:
    """Each stage's plan for a card of `vram_gb` GiB: what the automatic budget leaves of it (card_budget)."""
    family = family or registry.default()
    check_video_size(width, height, frames, family)
    vram = None if vram_gb is None else card_budget(vram_gb)[0]
    dit = plan_dit(width, height, frames, vram, weight_dtype=weight_dtype, prefetch=prefetch, capability=capability,
                   family=family)
    # the VAE's tiles chosen so that its stage needs no more than the DiT's (which sets the card's size)
    cap = dit.total if dit.fits is not False else None
    return [plan_text_encoder(vram, family=family), dit, plan_vae(width, height, frames, vram, family=family, cap=cap)]


def describe(plans: list[StagePlan], width: int, height: int, frames: int, vram_gb: float | None) -> str:
    if vram_gb is not None:
        usable, context, margin = card_budget(vram_gb)
        budget = (f"a {vram_gb:g} GiB card: {context / GIB:.2f} GiB for the CUDA context and cuBLAS workspace, "
                  f"{margin / GIB:.2f} GiB budget margin, {usable / GIB:.2f} GiB for each stage — the automatic budget "
                  "the loaders use")
    else:
        budget = "no budget given: the minimum settings"
    lines = [f"HyStream memory plan for {width}×{height}, {frames} frames ({budget})",
             f"{'stage':<14s}{'weights':>9s}{'activ.':>9s}{'total':>9s}  {'fits':<5s} settings"]
    for p in plans:
        fits = {True: "yes", False: "NO", None: "-"}[p.fits]
        lines.append(f"{p.stage:<14s}{p.weights / GIB:>9.2f}{p.activations / GIB:>9.2f}{p.total / GIB:>9.2f}  {fits:<5s} {p.settings}")
    largest = max(p.total for p in plans)
    need = largest + CUDA_CONTEXT_BYTES + budget_margin(largest)
    lines.append("GiB; stages run one after another, so the largest total plus the CUDA context "
                 f"({CUDA_CONTEXT_BYTES / GIB:g} GiB) and the budget margin is the card it needs: {need / GIB:.2f} GiB.")
    return "\n".join(lines)


def as_dict(plans: list[StagePlan]) -> list[dict]:
    return [dict(dataclasses.asdict(p), total=p.total) for p in plans]
