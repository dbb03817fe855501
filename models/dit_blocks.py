"""HunyuanVideo's transformer blocks, with Tencent's module names so the common files load as they are.

Double-stream block: image and text tokens keep their own weights (modulation, qkv, projection, MLP)
and meet only in one joint attention. Single-stream block: one stream of [image | text] tokens, with
a fused linear1 (qkv + MLP in) and linear2 (attention out + MLP out).
"""

from __future__ import annotations

import torch
from torch import nn

from . import lean
from .attention import JointAttention
from .layers import MLP, LayerNorm, Linear, Modulation, RMSNorm, common, gated, gelu_tanh, modulate
from .parts import PartedBlock
from .rope import apply_rope


def split_heads(qkv: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[B, L, 3·H·D] → three [B, L, H, D] views."""
    q, k, v = qkv.unflatten(-1, (3, heads, -1)).unbind(2)
    return q, k, v


class DoubleStreamBlock(PartedBlock):
    """Streamed in four parts, in the order they are used: the text's keys, values and queries; the image
    side of the attention (its keys and values, then its queries against all, projected into the residual);
    the image MLP; the text's projection and MLP. The largest part is about a quarter of the block."""

    PARTS = (("txt_mod", "txt_attn_qkv", "txt_attn_q_norm", "txt_attn_k_norm"),
             ("img_mod", "img_attn_qkv", "img_attn_q_norm", "img_attn_k_norm", "img_attn_proj"),
             ("img_mlp",),
             ("txt_attn_proj", "txt_mlp"))

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

    def _text_in(self, txt, vec):
        mods = self.txt_mod(common(vec))
        return mods, self._qkv("txt", txt, mods[0], mods[1])

    def _image_attention(self, img, vec, cos, sin, text_qkv, attend: JointAttention):
        mods = self.img_mod(vec)
        iq, ik, iv = self._qkv("img", img, mods[0], mods[1])
        iq, ik = apply_rope(iq, cos, sin), apply_rope(ik, cos, sin)
        tq, tk, tv = text_qkv
        attn = attend.joint(iq, tq, *attend.keys_values([torch.cat((ik, tk), 1), torch.cat((iv, tv), 1)]))
        n_img = img.shape[1]
        return mods, img + gated(self.img_attn_proj(attn[:, :n_img]), mods[2]), attn[:, n_img:]

    def _mlp(self, side: str, x, mods):
        return x + gated(getattr(self, f"{side}_mlp")(modulate(getattr(self, f"{side}_norm2")(x), mods[3], mods[4])), mods[5])

    def _text_out(self, txt, attn, mods):
        return self._mlp("txt", txt + gated(self.txt_attn_proj(attn), mods[2]), mods)

    def forward(self, img, txt, vec, cos, sin, attend: JointAttention | None = None, chunk: int | None = None):
        """chunk: tokens per chunk for the lean path (models/lean.py); None = the plain path. vec may be
        FirstTokens (token replace): then the first image tokens get their own modulation, the text never.
        attend: how the image and text tokens meet (a key mask, ranks sharing the image tokens)."""
        attend = attend or JointAttention()
        if chunk:
            return lean.double_block(self, img, txt, vec, cos, sin, attend, chunk)
        text_in, image_attention, img_mlp, text_out = self.parts
        t_mods, text_qkv = text_in(self._text_in, txt, vec)
        i_mods, img, t_attn = image_attention(self._image_attention, img, vec, cos, sin, text_qkv, attend)
        del text_qkv
        img = img_mlp(self._mlp, "img", img, i_mods)
        txt = text_out(self._text_out, txt, t_attn, t_mods)
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

    def forward(self, x, vec, cos, sin, n_img: int, attend: JointAttention | None = None, chunk: int | None = None):
        attend = attend or JointAttention()
        if chunk:
            return lean.single_block(self, x, vec, cos, sin, n_img, attend, chunk)
        shift, scale, gate = self.modulation(vec)
        qkv, mlp = self.linear1(modulate(self.pre_norm(x), shift, scale)).split([3 * self.hidden, self.mlp_hidden], -1)
        q, k, v = split_heads(qkv, self.heads)
        q, k = self.q_norm(q), self.k_norm(k)
        q = torch.cat((apply_rope(q[:, :n_img], cos, sin), q[:, n_img:]), 1)
        k = torch.cat((apply_rope(k[:, :n_img], cos, sin), k[:, n_img:]), 1)
        attn = attend.joint(q[:, :n_img], q[:, n_img:], *attend.keys_values([k, v]))
        return x + gated(self.linear2(torch.cat((attn, gelu_tanh(mlp)), -1)), gate)
