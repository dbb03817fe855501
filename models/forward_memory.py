"""How much activation memory a transformer forward needs, measured rather than guessed.

The forward runs on fake tensors (nothing is allocated) through a reduced copy of the model — one block of
each kind: blocks run one after another, so one of each has the whole model's peak — with the attention
kernel SDPA will really pick for the device and dtype (memory_probe.sdpa_kernel: O(N) flash /
memory-efficient, or the math kernel's N×N scores). What the forward allocates counts, weights excluded
(they are the streamer's business), including the temporaries the weights make at use: fp8 weights
upcast (× their scale), GGUF weights decoded, LoRA deltas merged into those copies. A family's DiT builds
the reduced model and its inputs; this module measures.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call

from ..memory_probe import LiveBytes, attention_kernel, fake_mode
from ..quant.kinds import KINDS
from .layers import Linear, LowRankAdapter


def forward_peak(model: nn.Module, streamed: list[nn.Module], make_inputs: Callable[[], dict], *, dtype: torch.dtype,
                 device: str, kernel: str, stored: torch.dtype | str | None = None, lora_rank: int = 0) -> int:
    """Peak bytes a forward of `model` (a meta skeleton, settings already set) allocates.

    streamed: the blocks whose Linear weights are kept as `stored` (None = the compute dtype; fp8 carries a
        scale as scaled-fp8 files do; a GGUF type name keeps them as their bytes, decoded at use).
    make_inputs(): the forward's keyword inputs, created inside the fake mode.
    lora_rank: LoRA adapters of this rank on every Linear."""
    quant = KINDS[stored] if isinstance(stored, str) else None
    in_blocks = {id(m) for b in streamed for m in b.modules()}
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
        inputs = make_inputs()
        probe = LiveBytes(existing=[*params.values(), *adapters, *(t for t in inputs.values() if torch.is_tensor(t))])
        with probe:
            out = functional_call(model, params, (), inputs)
        del out
    return probe.peak
