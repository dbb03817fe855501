"""Lean execution of the DiT blocks: the same maths, a fraction of the activation memory.

At video sizes the activations dominate (diffusers' blocks peak at 12.4 GiB at 720p×129 for activations
alone). Here a block keeps only three [N, hidden] tensors alive — the residual stream, the keys and the
values — and everything else exists one chunk of tokens at a time:
- keys and values are written chunk by chunk into preallocated [B, N, heads, head_dim] buffers (RoPE
  applied per chunk, in fp32 for that chunk only), never as a fused [N, 3·hidden] qkv;
- queries are computed per chunk (norm and modulation recomputed for the chunk: cheap), attended against
  the full keys/values, projected and added into the residual stream in place;
- the MLP runs per chunk, so the [N, 4·hidden] hidden never exists whole; the single block's output
  projection is split over its attention and MLP parts instead of materialising cat([attn, mlp]).
Weights are taken right where they are used and dropped after (`compute_weight`: upcast, fp8 scale, LoRA),
fused ones by row range (q, k, v, MLP parts), so at most a few of a block's matrices exist upcast at once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .attention import attention
from .layers import Linear, common, gated, modulate
from .rope import apply_rope

AUTO_PARTS = 32  # auto chunking: a sequence in this many parts (chunk temporaries ≈ 1/3 of a hidden-wide tensor)…
MIN_CHUNK = 1024  # …but never chunks smaller than this (matmuls stay efficient; tiny inputs run unchunked)


def auto_chunk(tokens: int) -> int:
    return max(MIN_CHUNK, -(-tokens // AUTO_PARTS))


def chunks(n: int, size: int):
    for a in range(0, n, size):
        yield a, min(n, a + size)


def gelu_(x: torch.Tensor) -> torch.Tensor:
    """tanh-GELU in place: the MLP hidden exists once, not twice."""
    return torch.ops.aten.gelu_(x, approximate="tanh")


def weights(linear: Linear, dtype: torch.dtype, a: int | None = None, b: int | None = None):
    """(weight, bias) of `linear` as used, output rows [a, b) only if given."""
    rows = None if a is None else (a, b)
    return linear.compute_weight(dtype, rows), linear.compute_bias(dtype, rows)


def project(x: torch.Tensor, wb, heads: int) -> torch.Tensor:
    """Linear on a chunk, split into heads: [B, c, heads, head_dim]."""
    return F.linear(x, *wb).unflatten(-1, (heads, -1))


def rope_part(t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, a: int, n_rope: int) -> torch.Tensor:
    """RoPE on the rows of chunk [a, a+c) that are image tokens (indices < n_rope)."""
    end = min(a + t.shape[1], n_rope)
    if end <= a:
        return t
    if end == a + t.shape[1]:
        return apply_rope(t, cos[a:end], sin[a:end])
    return torch.cat((apply_rope(t[:, : end - a], cos[a:end], sin[a:end]), t[:, end - a:]), 1)


def fill_keys_values(k, v, x, offset, norm_mod, wk, wv, k_norm, heads, cos, sin, n_rope, chunk):
    """Write the keys and values of stream `x` into k, v at `offset` (RoPE on its first n_rope tokens)."""
    for a, b in chunks(x.shape[1], chunk):
        xm = norm_mod(x[:, a:b], a)
        k[:, offset + a:offset + b] = rope_part(k_norm(project(xm, wk, heads)), cos, sin, a, n_rope)
        v[:, offset + a:offset + b] = project(xm, wv, heads)
        del xm


def _side(block, name, vec):
    """One stream's modulation and its normalise-and-modulate for a chunk starting at token a."""
    mods = getattr(block, f"{name}_mod")(vec)
    norm1 = getattr(block, f"{name}_norm1")
    return mods, lambda t, a: modulate(norm1(t), mods[0], mods[1], a)


def _queries(block, name, x, norm_mod, wq, a, b, cos, sin, n_rope):
    q_norm = getattr(block, f"{name}_attn_q_norm")
    return rope_part(q_norm(project(norm_mod(x[:, a:b], a), wq, block.heads)), cos, sin, a, n_rope)


def _text_in(block, txt, vec, k, v, n_img, chunk):
    """The text's keys and values into k, v after the image's, and its queries (few: kept whole)."""
    hidden, dt = txt.shape[-1], txt.dtype
    mods, norm_mod = _side(block, "txt", common(vec))
    qkv = block.txt_attn_qkv
    fill_keys_values(k, v, txt, n_img, norm_mod, weights(qkv, dt, hidden, 2 * hidden),
                     weights(qkv, dt, 2 * hidden, 3 * hidden), block.txt_attn_k_norm, block.heads, None, None, 0, chunk)
    wq = weights(qkv, dt, 0, hidden)
    q = torch.cat([_queries(block, "txt", txt, norm_mod, wq, a, b, None, None, 0) for a, b in chunks(txt.shape[1], chunk)], 1)
    return mods, q


def _image_attention(block, img, vec, cos, sin, k, v, text_q, key_mask, chunk):
    """The image's keys and values, then its queries chunk by chunk against all keys, projected into the
    residual; the text's attention output (projected later, with the text's own weights)."""
    hidden, dt, n_img = img.shape[-1], img.dtype, img.shape[1]
    mods, norm_mod = _side(block, "img", vec)
    qkv = block.img_attn_qkv
    fill_keys_values(k, v, img, 0, norm_mod, weights(qkv, dt, hidden, 2 * hidden),
                     weights(qkv, dt, 2 * hidden, 3 * hidden), block.img_attn_k_norm, block.heads, cos, sin, n_img, chunk)
    proj, wq = weights(block.img_attn_proj, dt), weights(qkv, dt, 0, hidden)
    for a, b in chunks(n_img, chunk):
        q = _queries(block, "img", img, norm_mod, wq, a, b, cos, sin, n_img)
        img[:, a:b] += gated(F.linear(attention(q, k, v, key_mask), *proj), mods[2], a)
        del q
    del proj, wq
    text_attn = torch.cat([attention(text_q[:, a:b], k, v, key_mask) for a, b in chunks(text_q.shape[1], chunk)], 1)
    return mods, text_attn


def _mlp(block, name, x, mods, chunk):
    """x += gate2 · MLP(modulated norm2(x)), chunk by chunk (the 4·hidden MLP state never exists whole)."""
    dt, (_, _, _, shift2, scale2, gate2) = x.dtype, mods
    norm2, mlp = getattr(block, f"{name}_norm2"), getattr(block, f"{name}_mlp")
    fc1, fc2 = weights(mlp.fc1, dt), weights(mlp.fc2, dt)
    for a, b in chunks(x.shape[1], chunk):
        h = gelu_(F.linear(modulate(norm2(x[:, a:b]), shift2, scale2, a), *fc1))
        x[:, a:b] += gated(F.linear(h, *fc2), gate2, a)
        del h
    return x


def _text_out(block, txt, text_attn, mods, chunk):
    proj = weights(block.txt_attn_proj, txt.dtype)
    for a, b in chunks(txt.shape[1], chunk):
        txt[:, a:b] += gated(F.linear(text_attn[:, a:b], *proj), mods[2], a)
    del proj
    return _mlp(block, "txt", txt, mods, chunk)


def double_block(block, img, txt, vec, cos, sin, key_mask, chunk):
    """The double block in its four streamed parts (dit_blocks.DoubleStreamBlock.PARTS): the keys and values
    of both streams are the only [N, hidden] tensors alive beside the residual."""
    heads, hidden = block.heads, img.shape[-1]
    n_img = img.shape[1]
    text_in, image_attention, img_mlp, text_out = block.parts
    k = torch.empty(img.shape[0], n_img + txt.shape[1], heads, hidden // heads, dtype=img.dtype, device=img.device)
    v = torch.empty_like(k)
    t_mods, text_q = text_in(_text_in, block, txt, vec, k, v, n_img, chunk)
    i_mods, text_attn = image_attention(_image_attention, block, img, vec, cos, sin, k, v, text_q, key_mask, chunk)
    del k, v, text_q
    img_mlp(_mlp, block, "img", img, i_mods, chunk)
    text_out(_text_out, block, txt, text_attn, t_mods, chunk)
    return img, txt


def single_block(block, x, vec, cos, sin, n_img, key_mask, chunk):
    heads, dt, hidden = block.heads, x.dtype, block.hidden
    shift, scale, gate = block.modulation(vec)

    def norm_mod(t, a):
        return modulate(block.pre_norm(t), shift, scale, a)

    k = torch.empty(x.shape[0], x.shape[1], heads, hidden // heads, dtype=dt, device=x.device)
    v = torch.empty_like(k)
    fill_keys_values(k, v, x, 0, norm_mod, weights(block.linear1, dt, hidden, 2 * hidden),
                     weights(block.linear1, dt, 2 * hidden, 3 * hidden), block.k_norm, heads, cos, sin, n_img, chunk)
    wq = weights(block.linear1, dt, 0, hidden)
    wm = weights(block.linear1, dt, 3 * hidden, block.linear1.out_features)
    w2, b2 = weights(block.linear2, dt)
    w2_attn, w2_mlp = w2[:, :hidden], w2[:, hidden:]
    for a, b in chunks(x.shape[1], chunk):
        xm = norm_mod(x[:, a:b], a)
        q = rope_part(block.q_norm(project(xm, wq, heads)), cos, sin, a, n_img)
        out = F.linear(attention(q, k, v, key_mask), w2_attn)
        del q
        out += F.linear(gelu_(F.linear(xm, *wm)), w2_mlp, b2)
        x[:, a:b] += gated(out, gate, a)
        del xm, out
    return x
