"""Attention through `scaled_dot_product_attention` on [B, L, H, D] tensors.

Batch 1 never needs a mask: the DiT drops padded text tokens before attention, which is exactly
equivalent and keeps the fused O(N)-memory kernels usable. Batch > 1 passes a key mask [B, L].
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
