"""How much activation memory a DiT forward needs, measured rather than guessed.

The forward runs on fake tensors (no memory is allocated) through a copy of the model with one block
of each kind — blocks run one after another, so one of each has the whole model's peak — with the
attention kernel SDPA will really pick for the device and dtype (memory_probe.sdpa_kernel: O(N) flash /
memory-efficient, or the math kernel's N×N scores). What the forward allocates counts, weights excluded
(they are the streamer's business), including the temporaries the weights make at use: fp8 weights
upcast (× their scale) and LoRA deltas merged into those copies. Cached per shape and settings.
"""

from __future__ import annotations

import dataclasses
import functools

import torch
from torch.func import functional_call

from ..memory_probe import LiveBytes, attention_kernel, fake_mode
from ..quant.kinds import KINDS
from .dit_config import DiTConfig
from .layers import Linear, LowRankAdapter

MIN_CHUNK = 64  # smallest query chunk choose_chunk tries


@functools.lru_cache(maxsize=64)
def forward_peak_bytes(cfg: DiTConfig, x_shape: tuple, text_tokens: int, dtype: torch.dtype, lean: bool,
                       chunk_tokens: int | None, device: str = "cuda", kernel: str = "flash",
                       stored: torch.dtype | None = None, lora_rank: int = 0) -> int:
    """stored: the dtype the blocks' Linear weights are kept in (None = the compute dtype); fp8 weights
    carry a scale, as scaled-fp8 files do; a GGUF quantisation type name (e.g. "Q4_K") keeps them as
    their bytes, decoded at use. lora_rank: LoRA adapters of this rank on every Linear."""
    from .dit import HunyuanVideoDiT

    small = dataclasses.replace(cfg, depth_refiner=min(cfg.depth_refiner, 1), depth_double=min(cfg.depth_double, 1),
                                depth_single=min(cfg.depth_single, 1))
    with torch.device("meta"):
        model = HunyuanVideoDiT(small)
    model.lean, model.chunk_tokens, model.compute_dtype = lean, chunk_tokens, dtype
    model.device = torch.device(device)
    quant = KINDS[stored] if isinstance(stored, str) else None
    in_blocks = {id(m) for b in (*model.double_blocks, *model.single_blocks) for m in b.modules()}
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, Linear)]
    with attention_kernel(kernel), fake_mode():
        params = {}
        for n, p in model.named_parameters():
            owner = model.get_submodule(n.rpartition(".")[0]) if "." in n else model
            as_stored = stored is not None and id(owner) in in_blocks and n.endswith(".weight") and p.dim() == 2
            if as_stored and quant is not None:
                owner.quant = quant
                params[n] = torch.empty(p.shape[0], quant.row_bytes(p.shape[1]), dtype=torch.uint8, device=device)
            else:
                params[n] = torch.empty(p.shape, dtype=stored if as_stored else dtype, device=device)
        if quant is None and stored is not None and stored.itemsize == 1:
            params.update({f"{n}.scale_weight": torch.empty((), device=device)
                           for n, m in linears if id(m) in in_blocks})
        adapters = []
        if lora_rank:
            for _, m in linears:
                m.lora = [LowRankAdapter(torch.empty(lora_rank, m.in_features, device=device),
                                         torch.empty(m.out_features, lora_rank, device=device), 1.0, None, device, dtype)]
                adapters += [m.lora[0].down, m.lora[0].up]
        batch = x_shape[0]
        x_shape = (batch, cfg.in_channels, *x_shape[2:])  # an I2V DiT sees the image channels too
        inputs = dict(x=torch.empty(x_shape, dtype=dtype, device=device),
                      timestep=torch.empty(batch, device=device),
                      txt=torch.empty(batch, text_tokens, cfg.text_dim, dtype=dtype, device=device),
                      pooled=torch.empty(batch, cfg.pooled_dim, dtype=dtype, device=device),
                      guidance=torch.empty(batch, device=device) if cfg.guidance_embed else None)
        probe = LiveBytes(existing=[*params.values(), *adapters, *(t for t in inputs.values() if t is not None)])
        with probe:
            out = functional_call(model, params, (), inputs)
        del out
    return probe.peak
