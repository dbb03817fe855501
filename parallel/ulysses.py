"""Ulysses sequence parallelism (DeepSpeed-Ulysses) for the DiT's joint attention, through yunchang's
all-to-all (the library xDiT is built on).

Each rank computes queries, keys and values for its share of the image tokens and for all the text tokens.
Keys and values: an all-to-all turns [B, share, H, D] into every image token for H/N heads; the text's are
the same heads of this rank's own; the padding is dropped, so the sequence is exactly the one-device one.
Image queries go the same way out (a chunk of every rank's share, H/N heads) and back after attention.
Text queries (every rank has them) attend over this rank's heads; the heads are then gathered. Every rank
splits its queries at the same places (equal shares, equal chunks), so the collectives pair up.
"""

from __future__ import annotations

import torch

from ..models.attention import JointAttention, attention


class UlyssesAttention(JointAttention):
    def __init__(self, shards, key_mask: torch.Tensor | None):
        super().__init__(key_mask)
        self.shards, self.group = shards, shards.group

    def _my_heads(self, t: torch.Tensor) -> torch.Tensor:
        """This rank's H/N heads (the ones the all-to-all hands it: contiguous, in rank order)."""
        per = t.shape[2] // self.group.world
        return t[:, :, self.group.rank * per:(self.group.rank + 1) * per]

    def _to_heads(self, t: torch.Tensor) -> torch.Tensor:
        """[B, c, H, D] per rank → [B, N·c, H/N, D]: the c tokens of every rank, this rank's heads."""
        return self.group.all_to_all(t, 2, 1)

    def _to_tokens(self, t: torch.Tensor) -> torch.Tensor:
        """The way back: [B, N·c, H/N, D] → [B, c, H, D]."""
        return self.group.all_to_all(t, 1, 2)

    def _all_tokens(self, t: torch.Tensor) -> torch.Tensor:
        """This rank's [B, share | context, H, D] → [B, image | context, H/N, D]: one head of each rank's at a time
        (the exchange's buffers stay H/N of a share), written into the result, padding left out."""
        s, world, rank = self.shards, self.group.world, self.group.rank
        per = t.shape[2] // world
        out = t.new_empty(t.shape[0], s.n_tokens + t.shape[1] - s.share, per, t.shape[3])
        for j in range(per):  # heads j, per + j, 2·per + j, …: rank r receives its own j-th head
            out[:, :s.n_tokens, j] = self._to_heads(t[:, :s.share, j::per])[:, :s.n_tokens, 0]
        out[:, s.n_tokens:] = t[:, s.share:, rank * per:(rank + 1) * per]
        return out

    def keys_values(self, kv: list) -> tuple[torch.Tensor, torch.Tensor]:
        k = self._all_tokens(kv[0])
        kv[0] = None  # this rank's keys are sent: their buffer goes before the values are
        v = self._all_tokens(kv[1])
        kv.clear()
        return k, v

    def image(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, at: int = 0) -> torch.Tensor:
        """Tokens at..at+c of every rank's share; the padding's rows skip the kernel (zeros come back)."""
        q = self._to_heads(q)
        s, world = self.shards, self.group.world
        c = q.shape[1] // world
        real = [max(0, min(c, s.n_tokens - (r * s.share + at))) for r in range(world)]  # leading real rows per rank
        if sum(real) == world * c:
            out = attention(q, k, v, self.key_mask)
        else:
            rows = [q[:, r * c:r * c + n] for r, n in enumerate(real) if n]
            got = attention(torch.cat(rows, 1), k, v, self.key_mask) if rows else q.new_zeros(q.shape[0], 0, 1)
            out = q.new_zeros(*q.shape[:2], q.shape[2] * q.shape[3])
            done = 0
            for r, n in enumerate(real):
                out[:, r * c:r * c + n] = got[:, done:done + n]
                done += n
        return self._to_tokens(out.unflatten(-1, (k.shape[2], -1))).flatten(2)

    def context(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = attention(self._my_heads(q), k, v, self.key_mask).unflatten(-1, (k.shape[2], -1))
        return self.group.gather(out, 2).flatten(2)

