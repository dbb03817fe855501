"""The text token refiner (`txt_in`): projects LLaVA states to the DiT width and refines them with a
few self-attention blocks conditioned on the timestep and the mean of the valid text states."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import attention
from .dit_blocks import split_heads
from .layers import MLP, LayerNorm, Linear, TextProjection, TimestepEmbedder


class RefinerBlock(nn.Module):
    # streamed as its weight-holding submodules, in the order the forward calls each once (offload/units.py):
    # a ring slot holds one matrix, not the block (kept in the file's dtype, it would be the largest unit)
    CALL_ORDER = ("adaLN_modulation.1", "norm1", "self_attn_qkv", "self_attn_proj", "norm2", "mlp.fc1", "mlp.fc2")

    def __init__(self, hidden: int, heads: int, mlp_hidden: int):
        super().__init__()
        self.heads = heads
        self.norm1 = LayerNorm(hidden, affine=True)
        self.self_attn_qkv = Linear(hidden, 3 * hidden)
        self.self_attn_proj = Linear(hidden, hidden)
        self.norm2 = LayerNorm(hidden, affine=True)
        self.mlp = MLP(hidden, mlp_hidden, F.silu)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), Linear(hidden, 2 * hidden))
        self.parts = tuple((path, self.get_submodule(path)) for path in self.CALL_ORDER)  # a plain attribute

    def forward(self, x, c, mask):
        gate_attn, gate_mlp = (g.unsqueeze(1) for g in self.adaLN_modulation(c).chunk(2, dim=-1))
        q, k, v = split_heads(self.self_attn_qkv(self.norm1(x)), self.heads)
        x = x + self.self_attn_proj(attention(q, k, v, mask)) * gate_attn
        return x + self.mlp(self.norm2(x)) * gate_mlp


class IndividualTokenRefiner(nn.Module):
    def __init__(self, hidden: int, heads: int, mlp_hidden: int, depth: int):
        super().__init__()
        self.blocks = nn.ModuleList(RefinerBlock(hidden, heads, mlp_hidden) for _ in range(depth))

    def forward(self, x, c, mask):
        attn_mask = None
        if mask is not None:  # valid queries see valid keys; every row sees token 0 (as the reference)
            m = mask.bool()
            attn_mask = (m[:, None, :] & m[:, :, None]).unsqueeze(1)
            attn_mask[..., 0] = True
        for block in self.blocks:
            x = block(x, c, attn_mask)
        return x


class TokenRefiner(nn.Module):
    def __init__(self, text_dim: int, hidden: int, heads: int, mlp_hidden: int, depth: int):
        super().__init__()
        self.input_embedder = Linear(text_dim, hidden)
        self.t_embedder = TimestepEmbedder(hidden)
        self.c_embedder = TextProjection(text_dim, hidden)
        self.individual_token_refiner = IndividualTokenRefiner(hidden, heads, mlp_hidden, depth)

    def forward(self, txt: torch.Tensor, timestep: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """txt [B, L, text_dim]; mask [B, L] or None (all tokens valid)."""
        if mask is None:
            pooled = txt.mean(dim=1)
        else:
            m = mask.float().unsqueeze(-1)
            pooled = ((txt.float() * m).sum(dim=1) / m.sum(dim=1)).to(txt.dtype)
        c = self.t_embedder(timestep, txt.dtype) + self.c_embedder(pooled)
        return self.individual_token_refiner(self.input_embedder(txt), c, mask)
