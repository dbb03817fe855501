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

import warnings

import torch

from ..models.attention import JointAttention, attention


def _all_to_all():
    with warnings.catch_warnings():  # its ring modules' import warns about torch.jit.script
        warnings.simplefilter("ignore")
        from yunchang.comm.all_to_all import all_to_all_4D
    return all_to_all_4D


class UlyssesAttention(JointAttention):
    def __init__(self, shards, key_mask: torch.Tensor | None):
        super().__init__(key_mask)
        self.shards, self.group = shards, shards.group
        self.exchange = _all_to_all()

    def _my_heads(self, t: torch.Tensor) -> torch.Tensor:
        """This rank's H/N heads (the ones the all-to-all hands it: contiguous, in rank order)."""
        per = t.shape[2] // self.group.world
        return t[:, :, self.group.rank * per:(self.group.rank + 1) * per]

    def _to_heads(self, t: torch.Tensor) -> torch.Tensor:
        """[B, c, H, D] per rank → [B, N·c, H/N, D]: the c tokens of every rank, this rank's heads."""
        return self.exchange(t.contiguous(), 2, 1, group=self.group.group)

    def _to_tokens(self, t: torch.Tensor) -> torch.Tensor:
        """The way back: [B, N·c, H/N, D] → [B, c, H, D]."""
        return self.exchange(t.contiguous(), 1, 2, group=self.group.group)

    def _all_tokens(self, t: torch.Tensor) -> torch.Tensor:
        s = self.shards
        image = self._to_heads(t[:, :s.share])[:, :s.n_tokens]
        return torch.cat((image, self._my_heads(t[:, s.share:])), 1)

    def keys_values(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._all_tokens(k), self._all_tokens(v)

    def image(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, at: int = 0) -> torch.Tensor:
        """Tokens at..at+c of every rank's share; the padding's rows skip the kernel (zeros come back)."""
        q = self._to_heads(q)
        s, c = self.shards, q.shape[1] // self.group.world
        token = torch.arange(self.group.world).repeat_interleave(c) * s.share + at + torch.arange(c).repeat(self.group.world)
        real = (token < s.n_tokens).to(q.device)
        if bool(real.all()):
            out = attention(q, k, v, self.key_mask)
        else:
            out = q.new_zeros(*q.shape[:2], q.shape[2] * q.shape[3])
            out[:, real] = attention(q[:, real], k, v, self.key_mask)
        return self._to_tokens(out.unflatten(-1, (k.shape[2], -1))).flatten(2)

    def context(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = attention(self._my_heads(q), k, v, self.key_mask).unflatten(-1, (k.shape[2], -1))
        return self.group.gather(out, 2).flatten(2)

