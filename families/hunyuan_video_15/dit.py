"""HunyuanVideo 1.5's diffusion transformer, written for streaming: 54 dual-stream blocks over the latent
tokens and one context of [image (SigLIP) | glyph text (ByT5) | prompt (Qwen2.5-VL)] tokens, each kind
with its own projection and a type embedding; RoPE on the latent tokens only; patch 1×1×1, 65 input
channels (32 latent + 32 image condition + 1 mask).

Built on the meta device from the shared blocks (models/): the loader binds the small parts, the
streamer binds each block before it runs. Padding and absent inputs are dropped for batch 1 (exactly
equivalent to the reference's masks, which never let a valid token see an invalid one); batch > 1 uses
a key mask. A text-to-video run has no image tokens at all (the reference multiplies them by 0 and
masks them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import InputError
from ...models.dit_blocks import DoubleStreamBlock
from ...models.dual_stream_dit import DualStreamDiT, FinalLayer
from ...models.layers import LayerNorm, Linear, PatchEmbed3d, TimestepEmbedder, meta_param
from ...models.sequence import ImageTokens
from ...models.token_refiner import TokenRefiner
from .config import DiTConfig
from .keys import lora_aliases

TEXT, GLYPH, IMAGE = 0, 1, 2  # rows of cond_type_embedding


class ByT5Mapper(nn.Module):
    """`byt5_in`: LayerNorm → Linear → GELU → Linear → GELU → Linear (the glyph states to the DiT width)."""

    def __init__(self, dim: int, hidden: int, out: int):
        super().__init__()
        self.layernorm = LayerNorm(dim, affine=True, eps=1e-5)
        self.fc1, self.fc2, self.fc3 = Linear(dim, hidden), Linear(hidden, hidden), Linear(hidden, out)

    def forward(self, x):
        return self.fc3(F.gelu(self.fc2(F.gelu(self.fc1(self.layernorm(x))))))


class VisionProjection(nn.Module):
    """`vision_in.proj`: LayerNorm → Linear → GELU → Linear → LayerNorm (SigLIP tokens to the DiT width)."""

    def __init__(self, dim: int, out: int):
        super().__init__()
        self.proj = nn.ModuleList([LayerNorm(dim, affine=True, eps=1e-5), Linear(dim, dim), nn.GELU(),
                                   Linear(dim, out), LayerNorm(out, affine=True, eps=1e-5)])

    def forward(self, x):
        for layer in self.proj:
            x = layer(x)
        return x


class TypeEmbedding(nn.Module):
    """`cond_type_embedding`: one learned vector per context kind (text, glyph, image)."""

    def __init__(self, kinds: int, hidden: int):
        super().__init__()
        self.weight = meta_param(kinds, hidden)

    def forward(self, kind: int, dtype) -> torch.Tensor:
        return self.weight[kind].to(dtype)


class HunyuanVideo15DiT(DualStreamDiT):
    title = "HunyuanVideo 1.5"

    def __init__(self, cfg: DiTConfig, estimator=None):
        super().__init__(cfg, estimator)
        h = cfg.hidden
        self.img_in = PatchEmbed3d(cfg.in_channels, h, cfg.patch)
        self.time_in = TimestepEmbedder(h)
        self.time_r_in = TimestepEmbedder(h) if cfg.meanflow else None
        # the reference's refiner lets a padded row see nothing (1.0's sees token 0): only padded rows differ,
        # and no valid token ever reads them, so the shared refiner serves both
        self.txt_in = TokenRefiner(cfg.text_dim, h, cfg.heads, cfg.refiner_mlp_hidden, cfg.depth_refiner)
        self.byt5_in = ByT5Mapper(cfg.glyph_dim, cfg.glyph_hidden, h)
        self.vision_in = VisionProjection(cfg.image_dim, h)
        self.cond_type_embedding = TypeEmbedding(3, h)
        self.double_blocks = nn.ModuleList(
            DoubleStreamBlock(h, cfg.heads, cfg.mlp_hidden, cfg.qkv_bias) for _ in range(cfg.depth))
        self.final_layer = FinalLayer(h, cfg.out_channels * cfg.patch[0] * cfg.patch[1] * cfg.patch[2])

    @property
    def blocks(self) -> list[nn.Module]:
        """The streamed blocks in the order they run: the token refiner's, then the dual-stream ones."""
        return [*self.txt_in.individual_token_refiner.blocks, *self.double_blocks]

    def forward_activation_bytes(self, args: tuple, kwargs: dict) -> int:
        x = kwargs.get("x", args[0] if args else None)
        txt = kwargs.get("txt", args[2] if len(args) > 2 else None)
        extra = sum(t.shape[1] for t in (kwargs.get("glyph"), kwargs.get("image")) if t is not None)
        return self.activation_bytes(tuple(x.shape), (txt.shape[1] if txt is not None else 0) + extra) if x is not None else 0

    # -- LoRA --------------------------------------------------------------------------------
    def lora_aliases(self) -> dict:
        return lora_aliases(self.cfg)

    def lora_hint(self) -> str:
        return "double_blocks (Tencent, split or fused q/k/v) or transformer_blocks (diffusers)"

    # -- the forward -----------------------------------------------------------------------------------
    def _check_inputs(self, x, txt, glyph, image):
        cfg = self.cfg
        if x.dim() != 5 or x.shape[1] != cfg.in_channels:
            raise InputError(f"DiT inputs [B, {cfg.in_channels}, T, H, W] (latents, image condition, mask)",
                             f"shape {list(x.shape)}", "use HunyuanVideo 1.5 latents (32 channels)")
        if txt.dim() != 3 or txt.shape[-1] != cfg.text_dim or txt.shape[0] != x.shape[0]:
            raise InputError(f"prompt states [B={x.shape[0]}, L, {cfg.text_dim}]", f"shape {list(txt.shape)}",
                             "connect the CONDITIONING of a HunyuanVideo 1.5 text encoder (Qwen2.5-VL)")
        if glyph is not None and glyph.shape[-1] != cfg.glyph_dim:
            raise InputError(f"glyph states [B, L, {cfg.glyph_dim}] (ByT5)", f"shape {list(glyph.shape)}",
                             "connect the CONDITIONING of a HunyuanVideo 1.5 text encoder (its ByT5 file)")
        if image is not None and image.shape[-1] != cfg.image_dim:
            raise InputError(f"image states [B, N, {cfg.image_dim}] (SigLIP)", f"shape {list(image.shape)}",
                             "encode the start image with the SigLIP vision model (sigclip_vision_patch14_384)")

    def _context(self, txt, txt_mask, glyph, glyph_mask, image, timestep, dt, batch):
        """[image | glyph | prompt] tokens with their type embeddings, and the key mask (None: all valid)."""
        parts, masks = [], []
        if image is not None:
            parts.append(self.vision_in(image.to(self.device, dt)) + self.cond_type_embedding(IMAGE, dt))
            masks.append(None)  # every image token valid (no mask read back from the device for it)
        if glyph is not None:
            glyph, glyph_mask = _valid(glyph.to(self.device, dt), glyph_mask, batch, self.device)
            if glyph.shape[1]:
                parts.append(self.byt5_in(glyph) + self.cond_type_embedding(GLYPH, dt))
                masks.append(glyph_mask)
        txt, txt_mask = _valid(txt.to(self.device, dt), txt_mask, batch, self.device)
        parts.append(self.txt_in(txt, timestep, None if txt_mask is None or bool(txt_mask.all()) else txt_mask)
                     + self.cond_type_embedding(TEXT, dt))
        masks.append(txt_mask)
        context = torch.cat(parts, 1)
        if all(m is None or bool(m.all()) for m in masks):
            return context, None
        return context, torch.cat([m if m is not None else torch.ones(batch, p.shape[1], dtype=torch.bool,
                                                                      device=self.device) for m, p in zip(masks, parts)], 1)

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, txt: torch.Tensor, txt_mask: torch.Tensor | None = None,
                glyph: torch.Tensor | None = None, glyph_mask: torch.Tensor | None = None,
                image: torch.Tensor | None = None, timestep_r: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, 65, T, H, W] (noisy latents | image condition | mask); timestep (and the MeanFlow model's
        timestep_r): [B] in 0…1000; txt: Qwen states [B, L, 3584] with txt_mask [B, L] (1 = valid) or None;
        glyph: ByT5 states [B, Lg, 1472] with glyph_mask; image: SigLIP states [B, 729, 1152] (None: T2V).
        Returns the velocity [B, 32, T, H, W]."""
        self._check_inputs(x, txt, glyph, image)
        dev, dt = self.device, self.compute_dtype
        batch, _, frames, height, width = x.shape
        pt, ph, pw = self.cfg.patch
        grid = (frames // pt, height // ph, width // pw)
        timestep = _per_sample(timestep, batch, dev)
        vec = self.time_in(timestep, dt)
        if self.time_r_in is not None:  # MeanFlow (step-distilled): the two embeddings are summed
            r = _per_sample(timestep_r if timestep_r is not None else torch.zeros_like(timestep), batch, dev)
            vec = vec + self.time_r_in(r, dt)
        x = x.to(dev, dt)
        tokens = ImageTokens(self.image_tokens(x.shape), lambda a, b: self.img_in.tokens(x, a, b))
        n_img = tokens.n
        split = self.token_split(n_img)  # this rank's share of the image tokens (all of them on one device)
        cache = self.step_cache
        img = tokens.whole() if cache is not None else None  # a cache decides on the whole sequence
        ctx_tokens = txt.shape[1] + (glyph.shape[1] if glyph is not None else 0) + (image.shape[1] if image is not None else 0)
        chunk = (self.chunk_tokens or split.auto_chunk(ctx_tokens)) if self.lean else None
        if cache is not None:
            skipped = cache.before_blocks(img, probe=lambda img=img: self.first_block_modulated_input(img, vec))
            if skipped is not None:
                return self.unpatchify(self.final(skipped, vec, n_img, chunk), grid, x.shape)
        context, ctx_mask = self._context(txt, txt_mask, glyph, glyph_mask, image, timestep, dt, batch)
        key_mask = None if ctx_mask is None else torch.cat(
            (torch.ones(batch, n_img, dtype=torch.bool, device=dev), ctx_mask), 1)
        attend = split.attention(key_mask)
        cos, sin = split.local_rope(*self.rope(grid))
        img_in = img.clone() if cache is not None and not cache.pauses_after_first_block else None
        img = split.local(img) if img is not None else split.local_tokens(tokens)  # ranks: the share made alone
        del tokens
        for k, block in enumerate(self.double_blocks):
            before = split.gather(img.clone()) if k == 0 and cache is not None and cache.pauses_after_first_block else None
            img, context = block(img, context, vec, cos, sin, attend, chunk=chunk)
            if before is not None:  # First-Block Cache decides here, on the whole sequence
                skipped = cache.after_first_block(before, split.gather(img))
                del before
                if skipped is not None:
                    del img, context
                    return self.unpatchify(self.final(skipped, vec, n_img, chunk), grid, x.shape)
        del context
        if cache is None:
            out = self.final_over(split, img, vec, img.shape[1], chunk)
        else:  # the cache keeps the whole sequence's residual (it decides on the whole, as on one device)
            img = split.gather(img)
            cache.after_blocks(img_in, img)
            del img_in
            out = self.final(img, vec, n_img, chunk)
        del img
        return self.unpatchify(out, grid, x.shape)


def _per_sample(t: torch.Tensor, batch: int, device) -> torch.Tensor:
    t = t.to(device).float()
    return t.expand(batch) if t.dim() else t.repeat(batch)


def _valid(states: torch.Tensor, mask: torch.Tensor | None, batch: int, device):
    """Batch 1: the valid tokens only (no mask needed); batch > 1: the states and a boolean mask."""
    if mask is None:
        return states, None
    mask = mask.to(device).bool()
    if batch == 1:
        return states[:, mask[0]], None
    return states, mask
