"""HunyuanVideo 1.5's prompt encoding: Qwen2.5-VL's states of the user's text + ByT5's states of its quoted
text (the glyph branch).

Matches diffusers' `HunyuanVideo15Pipeline.encode_prompt` token for token without computing padding: the
reference pads the prompt to 1000 tokens and the glyph text to 256 and masks the padding; with batch 1 the
valid tokens get the same states (Qwen's attention is causal; ByT5's masks the padded keys to exactly zero
weight), so the states come back unpadded with an all-ones mask. A prompt without quoted text has no glyph
states at all (the reference's zeros with mask 0, which the DiT drops).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ...errors import StateDictError
from ...models.llama_encoder import LlamaStates
from ...models.shapes import shape_reader
from .prompt import glyph_tokens, template_tokens

_CACHE: OrderedDict[tuple, PromptEmbeds] = OrderedDict()
CACHE_SIZE = 32
BYT5_EPS = 1e-6  # what the weights do not tell about ByT5 (T5 v1.1): norm eps, gated GELU (tanh), distance 128
BYT5_MAX_DISTANCE = 128


@dataclass
class PromptEmbeds:
    states: torch.Tensor  # [1, L, 3584] float32, CPU: the user's text + the closing tokens (Qwen2.5-VL)
    mask: torch.Tensor  # [1, L] int64, all ones (no padding)
    glyph: torch.Tensor | None  # [1, Lg, 1472] float32, CPU: the quoted text (ByT5), None when nothing is quoted
    dropped_tokens: int = 0


def infer_byt5_config(shapes: dict[str, tuple[int, ...]], describe: str):
    """transformers' T5Config of a ByT5 encoder from T5EncoderModel-named shapes."""
    import transformers

    shape = shape_reader(shapes, "a ByT5 glyph encoder (T5 encoder)", describe,
                         "the file is incomplete or not the ByT5 glyph encoder")
    vocab, width = shape("shared.weight")
    buckets, heads = shape("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")
    q_rows = shape("encoder.block.0.layer.0.SelfAttention.q.weight")[0]
    gated = "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in shapes
    d_ff = shape("encoder.block.0.layer.1.DenseReluDense." + ("wi_0" if gated else "wi") + ".weight")[0]
    ids = {int(m.group(1)) for k in shapes if (m := re.match(r"encoder\.block\.(\d+)\.", k))}
    if q_rows % heads or ids != set(range(len(ids))):
        raise StateDictError("a T5 encoder whose q rows split into the relative-bias heads, blocks 0…N",
                             f"q rows {q_rows}, {heads} heads, blocks {sorted(ids)[:8]} in {describe}",
                             "the file is incomplete or mixes models: download it again")
    return transformers.T5Config(vocab_size=vocab, d_model=width, d_kv=q_rows // heads, d_ff=d_ff,
                                 num_layers=len(ids), num_heads=heads, relative_attention_num_buckets=buckets,
                                 relative_attention_max_distance=BYT5_MAX_DISTANCE, layer_norm_epsilon=BYT5_EPS,
                                 feed_forward_proj="gated-gelu" if gated else "relu", is_encoder_decoder=False,
                                 use_cache=False)


class ByT5Glyph(nn.Module):
    """Byte ids [1, n] → ByT5's last hidden state [1, n, d_model] (its final norm applied)."""

    def __init__(self, config):
        super().__init__()
        import transformers

        with torch.device("meta"):
            self.model = transformers.T5EncoderModel(config)

    def expected(self) -> dict[str, tuple[int, ...]]:
        """Every tensor the file must hold (the encoder's embedding is the shared table)."""
        return {k: tuple(v.shape) for k, v in self.model.state_dict().items() if k != "encoder.embed_tokens.weight"}

    def load(self, state: dict[str, torch.Tensor], device, dtype) -> None:
        state = {k: v.to(device=device, dtype=dtype) for k, v in state.items()}
        state["encoder.embed_tokens.weight"] = state["shared.weight"]
        self.model.load_state_dict(state, strict=True, assign=True)
        self.model.eval()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids).last_hidden_state


class Hunyuan15TextEncoder:
    def __init__(self, qwen: LlamaStates, embed_rows: Callable[[list[int]], torch.Tensor], byt5: ByT5Glyph,
                 qwen_tokenizer, byt5_tokenizer, device: torch.device, dtype: torch.dtype,
                 byt5_dtype: torch.dtype, identity: tuple = ()):
        self.qwen = qwen
        self.embed_rows = embed_rows  # token ids → their embedding rows, read on the host
        self.byt5 = byt5
        self.qwen_tokenizer = qwen_tokenizer
        self.byt5_tokenizer = byt5_tokenizer
        self.device = torch.device(device)
        self.dtype = dtype
        self.byt5_dtype = byt5_dtype
        self.identity = identity  # the encoder files (path, size, mtime): part of the cache key

    @torch.no_grad()
    def prompt_states(self, prompt: str) -> tuple[torch.Tensor, int]:
        """Qwen2.5-VL's `hidden_states[-3]` (layer N−2's output, no final norm) after the template's head."""
        tokens = template_tokens(prompt, self.qwen_tokenizer)
        embeds = self.embed_rows(tokens.ids).to(device=self.device, dtype=self.dtype).unsqueeze(0)
        states = self.qwen(embeds)[:, tokens.crop:]
        return states.float().cpu(), tokens.dropped

    @torch.no_grad()
    def glyph_states(self, prompt: str) -> torch.Tensor | None:
        ids = glyph_tokens(prompt, self.byt5_tokenizer)
        if ids is None:
            return None
        return self.byt5(torch.tensor([ids], device=self.device)).float().cpu()

    def encode(self, prompt: str, use_cache: bool = True) -> PromptEmbeds:
        key = (self.identity, prompt)
        if use_cache and self.identity and key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
        states, dropped = self.prompt_states(prompt)
        out = PromptEmbeds(states, torch.ones(states.shape[:2], dtype=torch.long), self.glyph_states(prompt), dropped)
        if self.identity:
            _CACHE[key] = out
            while len(_CACHE) > CACHE_SIZE:
                _CACHE.popitem(last=False)
        return out


def clear_prompt_cache() -> None:
    _CACHE.clear()
