"""Before running: how much device memory each stage needs at a size, whether it fits a budget, and the
settings that make it fit (`python -m hystream plan`).

Every figure comes from the real model classes with the real shapes: weights from the skeletons' tensor
sizes (in the dtype they are stored in), activations from fake-tensor runs of the same code that will
run (memory_probe; the DiT through models/dit_memory.py, which the samplers' automatic budget uses too).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import torch

from .errors import BudgetError
from .memory_probe import LiveBytes, fake_mode, flash_attention
from .models.dit import HunyuanVideoDiT
from .models.dit_config import DiTConfig
from .models.dit_memory import forward_peak_bytes
from .models.lean import auto_chunk
from .offload.budget import plan_residency
from .pipeline import check_video_size
from .quant.kinds import KINDS
from .vae.model import HunyuanVideoVAE, VAEConfig
from .vae.tiling import TileSpec

GIB = 1024 ** 3
CUDA_CONTEXT_BYTES = GIB // 2  # the CUDA context and library workspaces, outside PyTorch's allocator
FLASH_CAPABLE = (8, 0)  # sm80+: bf16 compute and the flash kernel
LLAVA_SHAPES = {"embed_tokens.weight": (128320, 4096), "layers.0.self_attn.q_proj.weight": (4096, 4096),
                "layers.0.self_attn.k_proj.weight": (1024, 4096), "layers.0.mlp.gate_proj.weight": (14336, 4096),
                **{f"layers.{i}.input_layernorm.weight": (4096,) for i in range(32)}}
CLIP_L_SHAPES = {"embeddings.token_embedding.weight": (49408, 768), "embeddings.position_embedding.weight": (77, 768),
                 "encoder.layers.0.mlp.fc1.weight": (3072, 768),
                 **{f"encoder.layers.{i}.layer_norm1.weight": (768,) for i in range(12)}}
TEMPLATE_TOKENS = 95 + 256


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


def _bytes(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def dit_weights(cfg: DiTConfig, weight_dtype: str) -> tuple[list[int], int]:
    """(bytes of each streamed block, bytes of the fixed parts) as stored: bf16, fp8 block Linears, or
    a GGUF type's bytes for every block Linear (the refiner's too: GGUF files quantise those as well)."""
    with torch.device("meta"):
        model = HunyuanVideoDiT(cfg)
    fp8 = weight_dtype == "fp8_e4m3fn"
    quant = KINDS.get(weight_dtype)

    def size(module, in_block: bool, refiner: bool) -> int:
        total = 0
        for name, p in module.named_parameters():
            linear = in_block and name.endswith(".weight") and p.dim() == 2
            if linear and quant is not None:
                total += p.shape[0] * quant.row_bytes(p.shape[1])
            elif linear and fp8 and not refiner:
                total += p.numel() + 4
            else:
                total += p.numel() * 2
        return total

    refiner = set(map(id, model.txt_in.individual_token_refiner.blocks))
    blocks = [size(b, True, id(b) in refiner) for b in model.blocks]
    return blocks, size(model, False, False) - sum(size(b, False, False) for b in model.blocks)


def plan_dit(width: int, height: int, frames: int, vram: int | None, *, weight_dtype: str = "bf16",
             prefetch: int = 1, text_tokens: int = 256, cfg: DiTConfig = DiTConfig(),
             capability: tuple[int, int] = FLASH_CAPABLE, lora_rank: int = 0) -> StagePlan:
    """capability: the GPU's (sm); before sm80 the DiT computes in fp32 (no bf16 kernels) and attention
    runs SDPA's memory-efficient kernel; the planner uses the model's own dtype and kernel rules."""
    shape = (1, 16, (frames - 1) // 4 + 1, height // 8, width // 8)
    with torch.device("meta"):
        model = HunyuanVideoDiT(cfg)
    model.device, model.sdpa_capability = torch.device("cuda", 0), tuple(capability)
    model.compute_dtype = torch.bfloat16 if tuple(capability) >= FLASH_CAPABLE else torch.float32
    model.block_weight_dtype = (weight_dtype if weight_dtype in KINDS else
                                torch.float8_e4m3fn if weight_dtype == "fp8_e4m3fn" else torch.bfloat16)
    blocks, fixed = dit_weights(cfg, weight_dtype)
    tokens = shape[2] * (shape[3] // 2) * (shape[4] // 2) + text_tokens
    if vram is not None and model.attention_kernel() == "math":
        model.chunk_tokens = model.choose_chunk(shape, text_tokens, vram - fixed - 2 * max(blocks))
    act = model.activation_bytes(shape, text_tokens) if not lora_rank else _with_lora(model, shape, text_tokens, lora_rank)
    minimum = fixed + 2 * max(blocks) + act
    chunk = (f"chunks of {model.chunk_tokens or auto_chunk(tokens):,} of {tokens:,} tokens, "
             f"{str(model.compute_dtype).replace('torch.', '')} compute, {model.attention_kernel()} attention")
    if vram is None:
        return StagePlan("DiT", fixed + 2 * max(blocks), act,
                         f"prefetch 1, every block streamed through 2 slots, {chunk}", None)
    try:
        plan = plan_residency(blocks, vram, fixed_bytes=fixed, activation_bytes=act, prefetch=prefetch, what="the DiT")
    except BudgetError:
        return StagePlan("DiT", fixed + 2 * max(blocks), act, f"needs {minimum / GIB:.2f} GiB; lower the size or "
                         "frames" + (", or use weight_dtype fp8_e4m3fn" if weight_dtype == "bf16" else ""),
                         False, fixed + max(blocks) + act)
    return StagePlan("DiT", plan.total_bytes - act, act,
                     f"prefetch {plan.prefetch}, {len(plan.resident)}/{len(blocks)} blocks resident, {chunk}", True)


def _with_lora(model, shape, text_tokens, rank) -> int:
    from .memory_probe import sdpa_kernel
    from .models.dit_memory import forward_peak_bytes as peak

    stored = model.block_weight_dtype if model.block_weight_dtype != model.compute_dtype else None
    kernel = sdpa_kernel("cuda", model.compute_dtype, model.sdpa_capability, model.cfg.head_dim)
    return peak(model.cfg, tuple(shape), text_tokens, model.compute_dtype, True, model.chunk_tokens, "cuda", kernel,
                stored, rank)


@functools.lru_cache(maxsize=1)
def clip_l_params() -> int:
    from .models.clip_encoder import ClipPooled, infer_clip_config

    clip = ClipPooled(infer_clip_config(CLIP_L_SHAPES, "CLIP-L", eos_token_id=49407, bos_token_id=49406,
                                        pad_token_id=49407))
    return sum(p.numel() for p in clip.model.parameters())


@functools.lru_cache(maxsize=8)
def _llama_activations(tokens: int) -> int:
    from torch.func import functional_call

    from .models.llama_encoder import LlamaStates, infer_llama_config

    config = infer_llama_config(LLAVA_SHAPES, "LLaVA-Llama-3-8B")
    config.num_hidden_layers = 1  # layers run one after another: one has the peak
    with flash_attention(), fake_mode():
        model = LlamaStates(config, torch.device("cuda"))
        params = {n: torch.empty(p.shape, dtype=torch.float16, device="cuda") for n, p in model.named_parameters()}
        embeds = torch.empty(1, tokens, 4096, dtype=torch.float16, device="cuda")
        probe = LiveBytes(existing=[*params.values(), embeds])
        with probe:
            out = functional_call(model, params, (embeds,))
        del out
    return probe.peak


def plan_text_encoder(vram: int | None, *, fp8: bool = True) -> StagePlan:
    from .models.llama_encoder import LlamaStates, infer_llama_config

    config = infer_llama_config(LLAVA_SHAPES, "LLaVA-Llama-3-8B")
    layer = LlamaStates(config, torch.device("cpu")).layers[0]
    per_layer = sum(p.numel() * (1 if (fp8 and p.dim() == 2) else 2) for p in layer.parameters())
    weights = 2 * per_layer + clip_l_params() * 2
    act = _llama_activations(TEMPLATE_TOKENS)
    name = "llava_llama3_fp8_scaled" if fp8 else "llava_llama3_fp16"
    plan = StagePlan("text encoder", weights, act, f"{config.num_hidden_layers} layers of {name} streamed through "
                     "2 slots, CLIP-L resident")
    plan.fits = None if vram is None else plan.total <= vram
    return plan


@functools.lru_cache(maxsize=32)
def vae_tile_peak(tile: tuple[int, int, int], dtype: torch.dtype = torch.bfloat16) -> int:
    """Peak bytes of one decoder tile (latent t, h, w), measured on fake tensors (weights excluded)."""
    from torch.func import functional_call

    with torch.device("meta"):
        decoder = HunyuanVideoVAE(VAEConfig()).decoder
    with flash_attention(), fake_mode():
        params = {n: torch.empty(p.shape, dtype=dtype, device="cuda") for n, p in decoder.named_parameters()}
        z = torch.empty(1, 16, *tile, dtype=dtype, device="cuda")
        probe = LiveBytes(existing=[*params.values(), z])
        with probe:
            out = functional_call(decoder, params, (z,))
        del out
    return probe.peak


def plan_vae(width: int, height: int, frames: int, vram: int | None, spec: TileSpec = TileSpec()) -> StagePlan:
    with torch.device("meta"):
        vae = HunyuanVideoVAE(VAEConfig())
    weights = sum(p.numel() for p in vae.decoder.parameters()) * 2
    t, h, w = (frames - 1) // 4 + 1, height // 8, width // 8
    candidates = [spec] + [TileSpec(s, max(32, s // 4), 64, 16) for s in (192, 128, 96, 64) if s < spec.size] + \
        [TileSpec(64, 16, tt, 4) for tt in (32, 16, 8)]
    for c in candidates:
        size_l, _, temporal_l, _ = c.latent()
        tile = (min(t, temporal_l + 1), min(h, size_l), min(w, size_l))
        act = vae_tile_peak(tile)
        if vram is None or weights + act <= vram:
            settings = f"tiles {c.size} px / {c.overlap}, {c.temporal} frames / {c.temporal_overlap}"
            return StagePlan("VAE decode", weights, act, settings, None if vram is None else True)
    return StagePlan("VAE decode", weights, act, "even 64 px × 8-frame tiles do not fit", False)


def plan_all(width: int, height: int, frames: int, vram_gb: float | None = None, *, weight_dtype: str = "bf16",
             prefetch: int = 1, capability: tuple[int, int] = FLASH_CAPABLE) -> list[StagePlan]:
    """Each stage's plan for a GPU of `vram_gb`, of which the CUDA context takes CUDA_CONTEXT_BYTES first."""
    check_video_size(width, height, frames)
    vram = None if vram_gb is None else int(vram_gb * GIB) - CUDA_CONTEXT_BYTES
    return [plan_text_encoder(vram), plan_dit(width, height, frames, vram, weight_dtype=weight_dtype, prefetch=prefetch,
                                              capability=capability),
            plan_vae(width, height, frames, vram)]


def describe(plans: list[StagePlan], width: int, height: int, frames: int, vram_gb: float | None) -> str:
    budget = (f"budget {vram_gb:g} GiB, {CUDA_CONTEXT_BYTES / GIB:g} GiB of it for the CUDA context"
              if vram_gb is not None else "no budget given: the minimum settings")
    lines = [f"HyStream memory plan for {width}×{height}, {frames} frames ({budget})",
             f"{'stage':<14s}{'weights':>9s}{'activ.':>9s}{'total':>9s}  {'fits':<5s} settings"]
    for p in plans:
        fits = {True: "yes", False: "NO", None: "-"}[p.fits]
        lines.append(f"{p.stage:<14s}{p.weights / GIB:>9.2f}{p.activations / GIB:>9.2f}{p.total / GIB:>9.2f}  {fits:<5s} {p.settings}")
    need = max(p.total for p in plans) + CUDA_CONTEXT_BYTES
    lines.append("GiB; stages run one after another, so the largest total plus the CUDA context "
                 f"({CUDA_CONTEXT_BYTES / GIB:g} GiB) is what the GPU needs: {need / GIB:.2f} GiB.")
    return "\n".join(lines)


def as_dict(plans: list[StagePlan]) -> list[dict]:
    return [dict(dataclasses.asdict(p), total=p.total) for p in plans]
