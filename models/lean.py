"""Lean execution of the DiT blocks: the same maths, a fraction of the activation memory.

At video sizes the activations dominate (diffusers' blocks peak at 12.4 GiB at 720p×129 for activations
alone). Here a block keeps only three [N, hidden] tensors alive — the residual stream, the keys and the
values — and everything else exists one chunk of tokens at a time:
- keys and values are written chunk by chunk into preallocated [B, N, heads, head_dim] buffers (RoPE
  applied per chunk, in fp32 for that chunk only), never as a fused [N, 3·hidden] qkv;
- queries are computed per chunk (norm and modulation recomputed for the chunk: cheap), attended against
  the full keys/values, projected and added into the residual stream in place;
- the MLP runs per chunk and, within a chunk, a piece of its hidden units at a time (`mlp_pieces`), so
  neither the [N, 4·hidden] hidden nor its upcast weights exist whole; the single block's output
  projection is split over its attention and MLP parts instead of materialising cat([attn, mlp]);
- RoPE rotates ROPE_ROWS tokens at a time, in place.
Weights are taken right where they are used and dropped after (`compute_weight`: upcast, fp8 scale, LoRA),
fused ones by row range (q, k, v, MLP parts) and wide ones by column range (the output projections), so
at most a few pieces of a block's matrices exist upcast at once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .attention import JointAttention
from .layers import Linear, common, gated, modulate
from .rope import apply_rope

AUTO_PARTS = 64  # auto chunking: a sequence in this many parts (chunk temporaries ≈ 1/6 of a hidden-wide tensor)…
MIN_CHUNK = 1024  # …but never chunks smaller than this (matmuls stay efficient; tiny inputs run unchunked)
MLP_PIECE = 3072  # MLP hidden units per piece (a multiple of every GGUF block size): 1/4 of HunyuanVideo's


def auto_chunk(tokens: int, least: int = MIN_CHUNK) -> int:
    """The lean path's chunk for a sequence of `tokens`: 1/AUTO_PARTS of it, at least `least` (≥ MIN_CHUNK)."""
    return max(MIN_CHUNK, least, -(-tokens // AUTO_PARTS))


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


ROPE_ROWS = 1024  # RoPE runs on this many tokens at a time: its fp32 temporaries stay ~1/4 of a chunk's


def rope_part(t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, a: int, n_rope: int) -> torch.Tensor:
    """RoPE, in place, on the rows of chunk [a, a+c) that are image tokens (indices < n_rope); t is the
    chunk's own fresh tensor. Row slices at a time: the same values, a quarter of the fp32 temporaries."""
    for s in range(0, max(0, min(t.shape[1], n_rope - a)), ROPE_ROWS):
        e = min(s + ROPE_ROWS, t.shape[1], n_rope - a)
        t[:, s:e] = apply_rope(t[:, s:e], cos[a + s:a + e], sin[a + s:a + e])
    return t


def fill_keys_values(k, v, x, offset, norm_mod, qkv: Linear, hidden, k_norm, heads, cos, sin, n_rope, chunk):
    """Write the keys and values of stream `x` into k, v at `offset` (RoPE on its first n_rope tokens); the
    keys' and values' rows of the fused `qkv` taken chunk by chunk (a stored bf16 weight: views, no copy)."""
    for a, b in chunks(x.shape[1], chunk):
        xm = norm_mod(x[:, a:b], a)
        k[:, offset + a:offset + b] = rope_part(k_norm(project(xm, weights(qkv, xm.dtype, hidden, 2 * hidden), heads)),
                                                cos, sin, a, n_rope)
        v[:, offset + a:offset + b] = project(xm, weights(qkv, xm.dtype, 2 * hidden, 3 * hidden), heads)
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
    fill_keys_values(k, v, txt, n_img, norm_mod, qkv, hidden, block.txt_attn_k_norm, block.heads, None, None, 0, chunk)
    wq = weights(qkv, dt, 0, hidden)
    q = torch.cat([_queries(block, "txt", txt, norm_mod, wq, a, b, None, None, 0) for a, b in chunks(txt.shape[1], chunk)], 1)
    return mods, q


def _image_attention(block, img, vec, cos, sin, kv: list, text_q, attend: JointAttention, chunk):
    """The image's keys and values, then its queries chunk by chunk against all keys, projected into the
    residual; the text's attention output (projected later, with the text's own weights). kv: the [keys,
    values] buffers, handed on to `attend` (over ranks this device's go once they are sent)."""
    hidden, dt, n_img = img.shape[-1], img.dtype, img.shape[1]
    mods, norm_mod = _side(block, "img", vec)
    qkv = block.img_attn_qkv
    fill_keys_values(*kv, img, 0, norm_mod, qkv, hidden, block.img_attn_k_norm, block.heads, cos, sin, n_img, chunk)
    k, v = attend.keys_values(kv)
    for a, b in chunks(n_img, chunk):  # weights taken per chunk: stored bf16 ones are views, others upcast here
        q = _queries(block, "img", img, norm_mod, weights(qkv, dt, 0, hidden), a, b, cos, sin, n_img)
        img[:, a:b] += gated(F.linear(attend.image(q, k, v, a), *weights(block.img_attn_proj, dt)), mods[2], a)
        del q
    text_attn = torch.cat([attend.context(text_q[:, a:b], k, v) for a, b in chunks(text_q.shape[1], chunk)], 1)
    return mods, text_attn


def mlp_pieces(xm, up: Linear, up_first: int, down: Linear, down_first: int, width: int, dt, bias=None):
    """down(gelu(up(xm))) + bias over an MLP hidden of `width` (rows up_first… of `up`, input columns
    down_first… of `down`), MLP_PIECE hidden units at a time: the hidden state and the upcast weights exist a
    piece at a time, never whole. The first piece carries the bias (one piece = F.linear(h, w, bias))."""
    out = None
    for a, b in chunks(width, MLP_PIECE):
        h = gelu_(F.linear(xm, *weights(up, dt, up_first + a, up_first + b)))
        part = F.linear(h, down.compute_weight(dt, cols=(down_first + a, down_first + b)), bias if a == 0 else None)
        out = part if out is None else out.add_(part)
        del h, part
    return out


def _mlp(block, name, x, mods, chunk):
    """x += gate2 · MLP(modulated norm2(x)), chunk by chunk (the 4·hidden MLP state never exists whole)."""
    dt, (_, _, _, shift2, scale2, gate2) = x.dtype, mods
    norm2, mlp = getattr(block, f"{name}_norm2"), getattr(block, f"{name}_mlp")
    for a, b in chunks(x.shape[1], chunk):
        xm = modulate(norm2(x[:, a:b]), shift2, scale2, a)
        out = mlp_pieces(xm, mlp.fc1, 0, mlp.fc2, 0, mlp.fc1.out_features, dt, mlp.fc2.compute_bias(dt))
        x[:, a:b] += gated(out, gate2, a)
        del xm, out
    return x


def _text_out(block, txt, text_attn, mods, chunk):
    proj = weights(block.txt_attn_proj, txt.dtype)
    for a, b in chunks(txt.shape[1], chunk):
        txt[:, a:b] += gated(F.linear(text_attn[:, a:b], *proj), mods[2], a)
    del proj
    return _mlp(block, "txt", txt, mods, chunk)


def double_block(block, img, txt, vec, cos, sin, attend: JointAttention, chunk):
    """The double block in its four streamed parts (dit_blocks.DoubleStreamBlock.PARTS): the keys and values
    of both streams are the only [N, hidden] tensors alive beside the residual."""
    heads, hidden = block.heads, img.shape[-1]
    n_img = img.shape[1]
    text_in, image_attention, img_mlp, text_out = block.parts
    k = torch.empty(img.shape[0], n_img + txt.shape[1], heads, hidden // heads, dtype=img.dtype, device=img.device)
    v = torch.empty_like(k)
    t_mods, text_q = text_in(_text_in, block, txt, vec, k, v, n_img, chunk)
    kv = [k, v]
    del k, v
    i_mods, text_attn = image_attention(_image_attention, block, img, vec, cos, sin, kv, text_q, attend, chunk)
    del text_q
    img_mlp(_mlp, block, "img", img, i_mods, chunk)
    text_out(_text_out, block, txt, text_attn, t_mods, chunk)
    return img, txt


def single_block(block, x, vec, cos, sin, n_img, attend: JointAttention, chunk):
    heads, dt, hidden = block.heads, x.dtype, block.hidden
    shift, scale, gate = block.modulation(vec)

    def norm_mod(t, a):
        return modulate(block.pre_norm(t), shift, scale, a)

    k = torch.empty(x.shape[0], x.shape[1], heads, hidden // heads, dtype=dt, device=x.device)
    v = torch.empty_like(k)
    fill_keys_values(k, v, x, 0, norm_mod, block.linear1, hidden, block.k_norm, heads, cos, sin, n_img, chunk)
    kv = [k, v]
    del k, v
    k, v = attend.keys_values(kv)
    width = block.linear1.out_features - 3 * hidden  # the MLP's hidden units
    for a, b in chunks(x.shape[1], chunk):
        xm = norm_mod(x[:, a:b], a)
        q = rope_part(block.q_norm(project(xm, weights(block.linear1, dt, 0, hidden), heads)), cos, sin, a, n_img)
        m = min(max(n_img - a, 0), b - a)  # the chunk's image queries come first, its text ones after
        att = attend.joint(q[:, :m], q[:, m:], k, v, a)
        out = F.linear(att, block.linear2.compute_weight(dt, cols=(0, hidden)))
        del att, q
        out += mlp_pieces(xm, block.linear1, 3 * hidden, block.linear2, hidden, width, dt,
                          block.linear2.compute_bias(dt))
        x[:, a:b] += gated(out, gate, a)
        del xm, out
    return x
