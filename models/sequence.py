"""Where a forward's image tokens lie: here all on this device (parallel/shards.py shares them over ranks).

The DiT asks the same questions either way: this rank's tokens, RoPE rows and token-replace conditioning,
the whole sequence back, and the attention that joins image and context tokens.
"""

from __future__ import annotations

import torch

from .attention import JointAttention


class WholeSequence:
    """One device holds every image token: nothing to split, gather or exchange."""

    world = 1

    def __init__(self, n_tokens: int):
        self.n_tokens = n_tokens
        self.share = n_tokens  # the image tokens this rank holds (padding included)

    def local(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def local_rope(self, cos, sin):
        return cos, sin

    def local_vec(self, vec):
        return vec

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """The whole image sequence from this rank's share (here: the same tensor)."""
        return x

    def attention(self, key_mask: torch.Tensor | None) -> JointAttention:
        return JointAttention(key_mask)
