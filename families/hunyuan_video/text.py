"""HunyuanVideo's prompt encoding: LLaVA-Llama-3 states of the user turn + CLIP-L's pooled vector.

Matches diffusers' `HunyuanVideoPipeline.encode_prompt` token for token, with two differences that do
not change the result: the template's text budget is 256 *user* tokens (the template comes on top), and
padding is never computed (batch 1, causal attention: the valid tokens' states are the same), so the
states come back unpadded with an all-ones mask.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ...models.clip_encoder import ClipPooled
from ...models.llama_encoder import LlamaStates
from .prompt import CLIP_TOKENS, USER_TOKENS, image_template_tokens, template_tokens

_CACHE: OrderedDict[tuple, PromptEmbeds] = OrderedDict()
CACHE_SIZE = 32


@dataclass
class PromptEmbeds:
    states: torch.Tensor  # [1, L, 4096] float32, CPU: the user turn's LLaVA states
    mask: torch.Tensor  # [1, L] int64, all ones (no padding)
    pooled: torch.Tensor  # [1, 768] float32, CPU: CLIP-L pooled output
    dropped_tokens: int = 0


class HunyuanTextEncoder:
    def __init__(self, llama: LlamaStates, embed_rows: Callable[[list[int]], torch.Tensor], clip: ClipPooled,
                 llama_tokenizer, clip_tokenizer, device: torch.device, dtype: torch.dtype, identity: tuple = ()):
        self.llama = llama
        self.embed_rows = embed_rows  # token ids → their embedding rows, read on the host
        self.clip = clip
        self.llama_tokenizer = llama_tokenizer
        self.clip_tokenizer = clip_tokenizer
        self.device = torch.device(device)
        self.dtype = dtype
        self.identity = identity  # the encoder files (path, size, mtime): part of the cache key
        self.max_user_tokens = USER_TOKENS

    @torch.no_grad()
    def llama_states(self, prompt: str) -> tuple[torch.Tensor, int]:
        tokens = template_tokens(prompt, self.llama_tokenizer, self.max_user_tokens)
        embeds = self.embed_rows(tokens.ids).to(device=self.device, dtype=self.dtype).unsqueeze(0)
        states = self.llama(embeds)[:, tokens.crop:]
        return states.float().cpu(), tokens.dropped

    @torch.no_grad()
    def image_llama_states(self, prompt: str, image_features: torch.Tensor, interleave: int) -> tuple[torch.Tensor, int]:
        """HunyuanVideo-I2V: the image's projected features [1, n, width] take the template's <image>
        place; returned are every `interleave`-th image state, then the user's tokens and the blank line
        after the assistant header (as the reference pipeline crops them)."""
        tokens = image_template_tokens(prompt, self.llama_tokenizer, self.max_user_tokens)
        rows = lambda ids: self.embed_rows(ids).to(device=self.device, dtype=self.dtype).unsqueeze(0)
        image = image_features.to(device=self.device, dtype=self.dtype)
        states = self.llama(torch.cat((rows(tokens.head), image, rows(tokens.tail)), 1))
        at, n = len(tokens.head), image.shape[1]
        tail = states[:, at + n:]
        kept = torch.cat((states[:, at:at + n:interleave], tail[:, tokens.user[0]:tokens.user[1]], tail[:, tokens.after:]), 1)
        return kept.float().cpu(), tokens.dropped

    def encode_with_image(self, prompt: str, image_features: torch.Tensor, interleave: int) -> PromptEmbeds:
        states, dropped = self.image_llama_states(prompt, image_features, interleave)
        return PromptEmbeds(states, torch.ones(states.shape[:2], dtype=torch.long), self.clip_pooled(prompt), dropped)

    @torch.no_grad()
    def clip_pooled(self, prompt: str) -> torch.Tensor:
        ids = self.clip_tokenizer(prompt, padding="max_length", max_length=CLIP_TOKENS, truncation=True,
                                  return_tensors="pt")["input_ids"]
        return self.clip(ids.to(self.device)).float().cpu()

    def encode(self, prompt: str, use_cache: bool = True) -> PromptEmbeds:
        key = (self.identity, self.max_user_tokens, prompt)
        if use_cache and self.identity and key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
        states, dropped = self.llama_states(prompt)
        out = PromptEmbeds(states, torch.ones(states.shape[:2], dtype=torch.long), self.clip_pooled(prompt), dropped)
        if self.identity:
            _CACHE[key] = out
            while len(_CACHE) > CACHE_SIZE:
                _CACHE.popitem(last=False)
        return out


def clear_prompt_cache() -> None:
    _CACHE.clear()
