"""HunyuanVideo's transformer blocks, with Tencent's module names so the common files load as they are.

Double-stream block: image and text tokens keep their own weights (modulation, qkv, projection, MLP)
and meet only in one joint attention. Single-stream block: one stream of [image | text] tokens, with
a fused linear1 (qkv + MLP in) and linear2 (attention out + MLP out).
"""

from __future__ import annotations

import torch
from torch import nn

from . import lean
from .attention import attention
from .layers import MLP, LayerNorm, Linear, Modulation, RMSNorm, common, gated, gelu_tanh, modulate
from .rope import apply_rope


def split_heads(qkv: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[B, L, 3·H·D] → three [B, L, H, D] views."""
    q, k, v = qkv.unflatten(-1, (3, heads, -1)).unbind(2)
    return q, k, v


class DoubleStreamBlock(nn.Module):
    def __init__(self, hidden: int, heads: int, mlp_hidden: int, qkv_bias: bool = True):
        super().__init__()
        self.heads = heads
        head_dim = hidden // heads
        for side in ("img", "txt"):
            setattr(self, f"{side}_mod", Modulation(hidden, 6))
            setattr(self, f"{side}_norm1", LayerNorm(hidden, affine=False))
            setattr(self, f"{side}_attn_qkv", Linear(hidden, 3 * hidden, bias=qkv_bias))
            setattr(self, f"{side}_attn_q_norm", RMSNorm(head_dim))
            setattr(self, f"{side}_attn_k_norm", RMSNorm(head_dim))
            setattr(self, f"{side}_attn_proj", Linear(hidden, hidden))
            setattr(self, f"{side}_norm2", LayerNorm(hidden, affine=False))
            setattr(self, f"{side}_mlp", MLP(hidden, mlp_hidden, gelu_tanh))

    def _qkv(self, side: str, x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor):
        q, k, v = split_heads(getattr(self, f"{side}_attn_qkv")(modulate(getattr(self, f"{side}_norm1")(x), shift, scale)),
                              self.heads)
        return getattr(self, f"{side}_attn_q_norm")(q), getattr(self, f"{side}_attn_k_norm")(k), v

    def _mlp_residual(self, side: str, x, attn, gate1, shift2, scale2, gate2):
        x = x + gated(getattr(self, f"{side}_attn_proj")(attn), gate1)
        return x + gated(getattr(self, f"{side}_mlp")(modulate(getattr(self, f"{side}_norm2")(x), shift2, scale2)), gate2)

    def forward(self, img, txt, vec, cos, sin, key_mask=None, chunk: int | None = None):
        """chunk: tokens per chunk for the lean path (models/lean.py); None = the plain path. vec may be
        FirstTokens (token replace): then the first image tokens get their own modulation, the text never."""
        if chunk:
            return lean.double_block(self, img, txt, vec, cos, sin, key_mask, chunk)
        i_shift1, i_scale1, i_gate1, i_shift2, i_scale2, i_gate2 = self.img_mod(vec)
        t_shift1, t_scale1, t_gate1, t_shift2, t_scale2, t_gate2 = self.txt_mod(common(vec))
        iq, ik, iv = self._qkv("img", img, i_shift1, i_scale1)
        iq, ik = apply_rope(iq, cos, sin), apply_rope(ik, cos, sin)
        tq, tk, tv = self._qkv("txt", txt, t_shift1, t_scale1)
        attn = attention(torch.cat((iq, tq), 1), torch.cat((ik, tk), 1), torch.cat((iv, tv), 1), key_mask)
        n_img = img.shape[1]
        img = self._mlp_residual("img", img, attn[:, :n_img], i_gate1, i_shift2, i_scale2, i_gate2)
        txt = self._mlp_residual("txt", txt, attn[:, n_img:], t_gate1, t_shift2, t_scale2, t_gate2)
        return img, txt


class SingleStreamBlock(nn.Module):
    def __init__(self, hidden: int, heads: int, mlp_hidden: int):
        super().__init__()
        self.hidden = hidden
        self.heads = heads
        self.mlp_hidden = mlp_hidden
        head_dim = hidden // heads
        self.modulation = Modulation(hidden, 3)
        self.pre_norm = LayerNorm(hidden, affine=False)
        self.linear1 = Linear(hidden, 3 * hidden + mlp_hidden)
        self.q_norm = RMSNorm(head_dim)
        self.k_norm = RMSNorm(head_dim)
        self.linear2 = Linear(hidden + mlp_hidden, hidden)

    def forward(self, x, vec, cos, sin, n_img: int, key_mask=None, chunk: int | None = None):
        if chunk:
            return lean.single_block(self, x, vec, cos, sin, n_img, key_mask, chunk)
        shift, scale, gate = self.modulation(vec)
        qkv, mlp = self.linear1(modulate(self.pre_norm(x), shift, scale)).split([3 * self.hidden, self.mlp_hidden], -1)
        q, k, v = split_heads(qkv, self.heads)
        q, k = self.q_norm(q), self.k_norm(k)
        q = torch.cat((apply_rope(q[:, :n_img], cos, sin), q[:, n_img:]), 1)
        k = torch.cat((apply_rope(k[:, :n_img], cos, sin), k[:, n_img:]), 1)
        attn = attention(q, k, v, key_mask)
        return x + gated(self.linear2(torch.cat((attn, gelu_tanh(mlp)), -1)), gate)
