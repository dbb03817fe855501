"""Attention through `scaled_dot_product_attention` on [B, L, H, D] tensors.

Batch 1 never needs a mask: the DiT drops padded text tokens before attention, which is exactly
equivalent and keeps the fused O(N)-memory kernels usable. Batch > 1 passes a key mask [B, L].

The DiT blocks attend through a `JointAttention`: the image tokens first, the context (text) tokens after
them, keys and values of both. On one device it is plain attention; spread over ranks
(parallel/ulysses.py) each rank holds a share of the image tokens and the same method calls exchange them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
    """q, k, v: [B, L, H, D]; key_mask: bool [B, L] (True = attend) or a full bool mask [B, 1, Lq, Lk].
    Returns [B, L, H·D]."""
    mask = None
    if key_mask is not None:
        mask = key_mask[:, None, None, :] if key_mask.dim() == 2 else key_mask
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
    return out.transpose(1, 2).flatten(2)


class JointAttention:
    """Attention of a block's image and context tokens, all on this device. key_mask: bool [B, image +
    context tokens] (True = attend) or None."""

    def __init__(self, key_mask: torch.Tensor | None = None):
        self.key_mask = key_mask

    def keys_values(self, kv: list) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys and values every query attends to, from this device's [keys, values] ([B, image | context,
        H, D] each); the list is emptied, so that over ranks this device's buffers go as soon as they are sent."""
        k, v = kv
        kv.clear()
        return k, v

    def image(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, at: int = 0) -> torch.Tensor:
        """Queries of image tokens at..at+c of this device's → [B, c, H·D]."""
        return attention(q, k, v, self.key_mask)

    def context(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Queries of context tokens (every device has them all) → [B, c, H·D]."""
        return attention(q, k, v, self.key_mask)

    def joint(self, q_image: torch.Tensor, q_context: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              at: int = 0) -> torch.Tensor:
        """Image queries (from token `at`) then context queries → [B, image | context, H·D] (either may be
        empty). Two kernel calls, as over several ranks: CPU kernels round a row differently with the number of
        rows in the call, so the same calls keep one device and N ranks bit-identical."""
        parts = [f(q, k, v) for f, q in ((lambda q, k, v: self.image(q, k, v, at), q_image), (self.context, q_context))
                 if q.shape[1]]
        return parts[0] if len(parts) == 1 else torch.cat(parts, 1)
