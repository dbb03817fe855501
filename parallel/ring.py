"""Ring attention joined to Ulysses, for GPU counts the heads do not divide (the hybrid xDiT runs through
yunchang): N ranks as teams of u = gcd(H, N) consecutive ranks that exchange heads (Ulysses), and rings of
N/u ranks (one per team) that pass keys and values along.

After the team's all-to-all a rank holds, for H/u heads, its team's image tokens (its chunk: u shares, the
padding at the tail of the last) and the text tokens. Queries attend to the text first, then to each chunk
the ring passes on, their own first (yunchang's RingComm; the next chunk travels while this one is attended);
the partial softmaxes merge by their log-sum-exps (`merge_partial`, the form yunchang's ring attention uses). A chunk's padding rows
are left out of its keys, so every real query sees the one-device keys: equal to one device within rounding.

Text queries: every rank of a ring computes them for its team's heads; the heads are gathered from all
ranks and those of the first team kept, so every rank goes on with the same text tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.attention import JointAttention

# Every attention call passes all the ring's keys once, so a call's queries must cost the GPU at least as long as
# a chunk's keys and values take to arrive: compute per step ∝ rows × chunk, transfer ∝ chunk, so rows ≳ the
# GPU's FLOP/s over the link's bytes/s (≈ 2,700 for 400 TFLOP/s over 150 GB/s NVLink). The lean path's chunks
# are raised to this (or the whole share) around a ring; below it the exchange, not the GPU, would set the pace.
RING_QUERY_ROWS = 4096


def attention_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None = None):
    """SDPA that also returns the log-sum-exp ring attention merges by: q, k, v [B, L, h, D] → out [B, Lq, h, D],
    lse float32 [B, h, Lq]. key_mask bool [B, Lk] (True = attend): each batch row attends to its own keys."""
    if key_mask is not None and not bool(key_mask.all()):
        parts = [attention_lse(q[b:b + 1], k[b:b + 1, key_mask[b]], v[b:b + 1, key_mask[b]]) for b in range(q.shape[0])]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
    if q.device.type == "cuda":  # memory-efficient kernel: any dtype; its lse rows are padded to 32
        out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(qt, kt, vt, None, True)[:2]
    else:  # the kernel F.scaled_dot_product_attention runs on the CPU, with its lse
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(qt, kt, vt)[:2]
    return out.transpose(1, 2), lse[..., :q.shape[1]].float()


def merge_partial(out, lse, block_out: torch.Tensor, block_lse: torch.Tensor):
    """Softmax attention over keys A then B from each one's (out, lse): out float32 [B, L, h, D], lse [B, L, h, 1]
    (None, None before the first). The sigmoid form stays finite where one lse is far below the other."""
    block_lse = block_lse.transpose(-2, -1).unsqueeze(-1)
    if out is None:
        return block_out.float(), block_lse
    out.sub_(torch.sub(out, block_out).mul_(torch.sigmoid(block_lse - lse)))  # in place: one temporary
    return out, lse.sub_(F.logsigmoid(lse - block_lse))


class RingAttention(JointAttention):
    """shards: parallel.shards.TokenShards; team: the SequenceGroup exchanging heads (None: u = 1); ring: the
    RingGroup passing chunks."""

    def __init__(self, shards, key_mask: torch.Tensor | None, team, ring):
        super().__init__(key_mask)
        self.shards, self.team, self.ring = shards, team, ring
        self.chunk = (team.world if team is not None else 1) * shards.share  # image rows a ring member holds

    def _real_rows(self, member: int) -> int:
        """Image rows of ring member `member`'s chunk that are tokens (the rest is padding)."""
        return max(0, min(self.chunk, self.shards.n_tokens - member * self.chunk))

    def _to_heads(self, t: torch.Tensor) -> torch.Tensor:
        """[B, c, H, D] of each team rank → [B, u·c, H/u, D]: the team's rows, this rank's heads."""
        return self.team.all_to_all(t, 2, 1) if self.team is not None else t

    def _to_tokens(self, t: torch.Tensor) -> torch.Tensor:
        return self.team.all_to_all(t, 1, 2) if self.team is not None else t

    def _my_heads(self, t: torch.Tensor) -> torch.Tensor:
        if self.team is None:
            return t
        per = t.shape[2] // self.team.world
        return t[:, :, self.team.rank * per:(self.team.rank + 1) * per]

    def _text_out(self, t: torch.Tensor) -> torch.Tensor:
        """[B, Lt, H/u, D] → [B, Lt, H·D]: every head, as the first team computed it."""
        heads = t.shape[2] * (self.team.world if self.team is not None else 1)
        return self.shards.group.gather(t, 2)[:, :, :heads].flatten(2)

    def keys_values(self, kv: list) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, share | context, H, D] → this rank's chunk [B, chunk, H/u, D] of keys and of values (its padding
        kept: the ring passes equal shapes); the text's, [B, context, H/u, D], are kept here."""
        share, chunk, text = self.shards.share, [], []
        while kv:
            t = kv.pop(0)
            chunk.append(self._to_heads(t[:, :share]).contiguous())
            text.append(self._my_heads(t[:, share:]).clone())
            del t  # sent: this rank's buffer goes before the next one is exchanged
        self.text = tuple(text)
        return chunk[0], chunk[1]

    def _ring(self, queries: list[torch.Tensor], k: torch.Tensor, v: torch.Tensor) -> list[torch.Tensor]:
        """Each query set [B, L, H/u, D] over the text and every ring member's chunk → [B, L, H/u, D]. k, v: this
        rank's chunk. Two buffers: the chunk attended and the one arriving; the ring goes all the way round, so
        this rank's chunk comes home for the next call (one pass more, one buffer less than keeping it apart)."""
        ring = self.ring
        text_mask = None if self.key_mask is None else self.key_mask[:, self.shards.n_tokens:]
        outs = [merge_partial(None, None, *attention_lse(q, *self.text, text_mask)) for q in queries]
        here, spare = [k, v], [torch.empty_like(k), torch.empty_like(v)]
        for step in range(ring.world):
            ring.pass_on(here, spare)
            rows = self._real_rows((ring.rank - step) % ring.world)
            if rows:
                for i, q in enumerate(queries):
                    outs[i] = merge_partial(*outs[i], *attention_lse(q, here[0][:, :rows], here[1][:, :rows]))
            ring.arrived()
            here, spare = spare, here
        del spare
        if here[0] is not k:  # an odd ring: this rank's chunk came home into the other buffer
            k.copy_(here[0])
            v.copy_(here[1])
        return [out.to(q.dtype) for (out, _), q in zip(outs, queries)]

    def image(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, at: int = 0) -> torch.Tensor:
        return self._to_tokens(self._ring([self._to_heads(q)], k, v)[0]).flatten(2)

    def context(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self._text_out(self._ring([self._my_heads(q)], k, v)[0])

    def joint(self, q_image: torch.Tensor, q_context: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              at: int = 0) -> torch.Tensor:
        """Both query sets in one pass of the ring (every rank has the same sets, so the exchanges pair up)."""
        sets = [(q, go, back) for q, go, back in ((q_image, self._to_heads, self._to_tokens),
                                                   (q_context, self._my_heads, None)) if q.shape[1]]
        outs = self._ring([go(q) for q, go, _ in sets], k, v)
        parts = [back(out).flatten(2) if back is not None else self._text_out(out) for out, (_, _, back) in zip(outs, sets)]
        return parts[0] if len(parts) == 1 else torch.cat(parts, 1)
