"""Which image tokens a rank holds: the sequence in equal contiguous shares, the last padded.

The padding tokens (zeros, with a zero RoPE) run through the blocks like the others but are dropped
wherever tokens meet: from the keys and values before attention (parallel/ulysses.py, parallel/ring.py) and
from the gathered output. So every real token sees exactly the keys it sees on one device, in the same order.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..models.attention import JointAttention
from ..models.layers import FirstTokens
from ..models.lean import auto_chunk
from ..models.sequence import WholeSequence


class RopeRows:
    """Rows start…stop of a RoPE table (a tensor or GridRope), seen as rows 0…share: the lean path asks for
    row ranges; rows past the table (padding tokens) are zeros."""

    def __init__(self, table, start: int, stop: int, share: int):
        self.table, self.start, self.stop, self.share = table, start, stop, share

    def __len__(self) -> int:
        return self.share

    def __getitem__(self, rows: slice) -> torch.Tensor:
        a, b, _ = rows.indices(self.share)
        real = self.table[self.start + a:min(self.start + b, self.stop)]
        return F.pad(real, (0, 0, 0, (b - a) - real.shape[0]))


class TokenShards(WholeSequence):
    """The image sequence of `n_tokens` over the ranks of `group` (a parallel.group.SequenceGroup): rank r holds
    tokens r·share … (r+1)·share. heads: the model's attention heads (they choose the attention's exchange)."""

    def __init__(self, group, n_tokens: int, heads: int):
        super().__init__(n_tokens)
        self.group, self.world, self.heads = group, group.world, heads
        self.share = -(-n_tokens // group.world)
        self.start = min(group.rank * self.share, n_tokens)
        self.stop = min(self.start + self.share, n_tokens)

    def local(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's share of [B, n_tokens, C], padded to `share` tokens."""
        part = x[:, self.start:self.stop]
        return F.pad(part, (0, 0, 0, self.share - part.shape[1])) if part.shape[1] < self.share else part.clone()

    def local_tokens(self, tokens) -> torch.Tensor:
        """This rank's share made alone from `tokens` (models.sequence.ImageTokens), padded to `share` tokens."""
        part = tokens.rows(self.start, self.stop)
        return F.pad(part, (0, 0, 0, self.share - part.shape[1])) if part.shape[1] < self.share else part.contiguous()

    def local_rope(self, cos, sin):
        return RopeRows(cos, self.start, self.stop, self.share), RopeRows(sin, self.start, self.stop, self.share)

    def local_vec(self, vec):
        """Token-replace conditioning (the first n image tokens modulated apart) counted from this share."""
        if isinstance(vec, FirstTokens):
            return FirstTokens(vec.first, vec.rest, min(max(vec.n - self.start, 0), self.share))
        return vec

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """[B, share, C] on every rank → the whole [B, n_tokens, C] on every rank."""
        return self.group.gather(x, 1)[:, :self.n_tokens]

    @property
    def ring(self) -> bool:
        """Whether attention goes round a ring (the ranks do not divide the heads)."""
        return self.heads % self.world != 0

    def auto_chunk(self, context_tokens: int) -> int:
        """Around a ring every attention call passes all the keys once: its query rows must be enough to
        hide that (≥ RING_QUERY_ROWS, parallel/ring.py), not the lean path's smaller chunks."""
        from .ring import RING_QUERY_ROWS

        return auto_chunk(self.share + context_tokens, min(self.share, RING_QUERY_ROWS) if self.ring else 0)

    def report(self) -> dict:
        """What the run report says of the split: ranks, tokens, this rank's share and how attention is shared."""
        u = math.gcd(self.heads, self.world)
        way = f"ulysses {u}" if u == self.world else f"ring {self.world}" if u == 1 else f"ulysses {u} × ring {self.world // u}"
        return {"ranks": self.world, "image_tokens": self.n_tokens, "per_rank": self.share, "attention": way}

    def attention(self, key_mask: torch.Tensor | None) -> JointAttention:
        """Ulysses where the ranks divide the heads; otherwise Ulysses over gcd(heads, N) ranks joined by rings."""
        from .ring import RingAttention
        from .ulysses import UlyssesAttention

        if not self.ring:
            return UlyssesAttention(self, key_mask)
        return RingAttention(self, key_mask, *self.group.split(self.heads))
