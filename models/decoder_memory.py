"""One streamed decoder layer's activation peak (a text encoder's layers run one after another, so one layer
has the stage's peak), measured on fake tensors with the real transformers layer."""

from __future__ import annotations

import copy
import functools

import torch

from ..memory_probe import LiveBytes, fake_mode, flash_attention
from .llama_encoder import LlamaStates


def decoder_layer_peak(config, tokens: int, dtype: torch.dtype = torch.float16) -> int:
    """Peak bytes of one layer of `config` (a transformers Llama/Qwen2 config) over `tokens` tokens."""
    return _peak(_Frozen(config), tokens, dtype)


class _Frozen:
    """A config made hashable for the cache: the same layer shape measures once."""

    def __init__(self, config):
        self.config = copy.deepcopy(config)
        self.config.num_hidden_layers = 1
        self.key = repr(sorted((k, repr(v)) for k, v in self.config.to_dict().items()))

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other) -> bool:
        return isinstance(other, _Frozen) and self.key == other.key


@functools.lru_cache(maxsize=16)
def _peak(frozen: _Frozen, tokens: int, dtype: torch.dtype) -> int:
    from torch.func import functional_call

    with flash_attention(), fake_mode():
        model = LlamaStates(frozen.config, torch.device("cuda"))
        params = {n: torch.empty(p.shape, dtype=dtype, device="cuda") for n, p in model.named_parameters()}
        embeds = torch.empty(1, tokens, frozen.config.hidden_size, dtype=dtype, device="cuda")
        probe = LiveBytes(existing=[*params.values(), embeds])
        with probe:
            out = functional_call(model, params, (embeds,))
        del out
    return probe.peak
