"""Where a forward's image tokens lie: here all on this device (parallel/shards.py shares them over ranks).

The DiT asks the same questions either way: this rank's tokens, RoPE rows and token-replace conditioning,
the whole sequence back, and the attention that joins image and context tokens.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .attention import JointAttention
from .lean import auto_chunk


class ImageTokens:
    """A forward's n image tokens, made when asked: `rows(a, b)` gives tokens a…b [B, b - a, C] (a patch
    embedding computes only the latent frames they lie in), so a rank makes its share alone."""

    def __init__(self, n: int, rows: Callable[[int, int], torch.Tensor]):
        self.n, self.rows = n, rows

    def whole(self) -> torch.Tensor:
        return self.rows(0, self.n)


class WholeSequence:
    """One device holds every image token: nothing to split, gather or exchange."""

    world = 1

    def __init__(self, n_tokens: int):
        self.n_tokens = n_tokens
        self.share = n_tokens  # the image tokens this rank holds (padding included)

    def local(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def auto_chunk(self, context_tokens: int) -> int:
        """The lean path's chunk for this rank's tokens and the context's."""
        return auto_chunk(self.share + context_tokens)

    def local_tokens(self, tokens: ImageTokens) -> torch.Tensor:
        """This rank's tokens made from `tokens` (here: all of them)."""
        return tokens.whole()

    def local_rope(self, cos, sin):
        return cos, sin

    def local_vec(self, vec):
        return vec

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """The whole image sequence from this rank's share (here: the same tensor)."""
        return x

    def attention(self, key_mask: torch.Tensor | None) -> JointAttention:
        return JointAttention(key_mask)
