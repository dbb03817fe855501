"""HunyuanVideo's dual-stream → single-stream diffusion transformer, written for streaming.

The module is built on the meta device; the loader binds the small parts (embedders, refiner, final
layer) and the streamer binds each block just before it runs, so this code never knows where its
weights live. Text padding is dropped for batch 1 (exactly equivalent to masking, and it keeps the
fused attention kernels usable); batch > 1 uses a key mask.
"""

from __future__ import annotations

import torch
from torch import nn

from ...errors import InputError
from ...models.dit_blocks import DoubleStreamBlock, SingleStreamBlock
from ...models.dual_stream_dit import DualStreamDiT, FinalLayer
from ...models.layers import (
    FirstTokens,
    MLPEmbedder,
    PatchEmbed3d,
    TimestepEmbedder,
)
from ...models.sequence import ImageTokens
from ...models.token_refiner import TokenRefiner
from .config import DiTConfig
from .keys import lora_aliases


class HunyuanVideoDiT(DualStreamDiT):
    title = "HunyuanVideo"

    def __init__(self, cfg: DiTConfig, estimator=None):
        super().__init__(cfg, estimator)
        h = cfg.hidden
        self.img_in = PatchEmbed3d(cfg.in_channels, h, cfg.patch)
        self.time_in = TimestepEmbedder(h)
        self.vector_in = MLPEmbedder(cfg.pooled_dim, h)
        self.guidance_in = TimestepEmbedder(h) if cfg.guidance_embed else None
        self.txt_in = TokenRefiner(cfg.text_dim, h, cfg.heads, cfg.refiner_mlp_hidden, cfg.depth_refiner)
        self.double_blocks = nn.ModuleList(
            DoubleStreamBlock(h, cfg.heads, cfg.mlp_hidden, cfg.qkv_bias) for _ in range(cfg.depth_double))
        self.single_blocks = nn.ModuleList(
            SingleStreamBlock(h, cfg.heads, cfg.single_mlp_hidden) for _ in range(cfg.depth_single))
        self.final_layer = FinalLayer(h, cfg.out_channels * cfg.patch[0] * cfg.patch[1] * cfg.patch[2])

    # -- LoRA --------------------------------------------------------------------------------------------
    def lora_aliases(self) -> dict:
        """diffusers/PEFT LoRA module names → our Linears (see keys.lora_aliases)."""
        return lora_aliases(self.cfg)

    def lora_hint(self) -> str:
        return "double_blocks/single_blocks (Tencent) or transformer_blocks (diffusers)"

    def forward_activation_bytes(self, args: tuple, kwargs: dict) -> int:
        """activation_bytes for a forward called with these arguments (a bare forward's automatic budget)."""
        x = kwargs.get("x", args[0] if args else None)
        txt = kwargs.get("txt", args[2] if len(args) > 2 else None)
        return self.activation_bytes(tuple(x.shape), txt.shape[1] if txt is not None else 0) if x is not None else 0

    @property
    def blocks(self) -> list[nn.Module]:
        """All streamable blocks in the order they run: the token refiner's, the double, the single."""
        return [*self.txt_in.individual_token_refiner.blocks, *self.double_blocks, *self.single_blocks]

    def _check_inputs(self, x, txt, pooled, guidance):
        cfg = self.cfg
        if x.dim() != 5 or x.shape[1] != cfg.in_channels:
            raise InputError(f"latents [B, {cfg.in_channels}, T, H/8, W/8]", f"shape {list(x.shape)}",
                             "pass HunyuanVideo latents (16 channels), e.g. from EmptyHunyuanLatentVideo")
        if any(n % p for n, p in zip(x.shape[2:], cfg.patch)):
            raise InputError(f"latent T, H, W divisible by the patch size {list(cfg.patch)}",
                             f"{list(x.shape[2:])}", "use width and height multiples of 16")
        if txt.dim() != 3 or txt.shape[-1] != cfg.text_dim or txt.shape[0] != x.shape[0]:
            raise InputError(f"text states [B={x.shape[0]}, L, {cfg.text_dim}]", f"shape {list(txt.shape)}",
                             "connect the CONDITIONING of a HunyuanVideo text encoder (LLaVA-Llama-3)")
        if pooled is None or pooled.shape != (x.shape[0], cfg.pooled_dim):
            raise InputError(f"a pooled CLIP vector [B, {cfg.pooled_dim}]",
                             "none" if pooled is None else f"shape {list(pooled.shape)}",
                             "the CONDITIONING needs 'pooled_output' from CLIP-L")
        if cfg.guidance_embed and guidance is None:
            raise InputError("an embedded guidance value (this model is guidance-distilled)", "none",
                             "pass guidance (e.g. 6.0 × 1000)")

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, txt: torch.Tensor,
                txt_mask: torch.Tensor | None = None, pooled: torch.Tensor | None = None,
                guidance: torch.Tensor | None = None, first_frame_tokens: int = 0, **context) -> torch.Tensor:
        """x: latents [B, C, T, H, W]; timestep, guidance: [B] in 0..1000 units; txt: [B, L, text_dim];
        txt_mask: [B, L] (1 = valid) or None; pooled: [B, pooled_dim]. Returns the velocity like x.
        first_frame_tokens > 0 (HunyuanVideo-I2V token replace): the blocks modulate the first that many
        image tokens (the clean first latent frame) with t = 0 and no guidance; the text, the refiner and the
        final layer use the step's conditioning only. `context`: what a subclass's inputs add (FramePack)."""
        self._check_inputs(x, txt, pooled, guidance)
        dev, dt = self.device, self.compute_dtype
        batch, _, frames, height, width = x.shape
        pt, ph, pw = self.cfg.patch
        grid = (frames // pt, height // ph, width // pw)
        x, txt, pooled = x.to(dev, dt), txt.to(dev, dt), pooled.to(dev, dt)
        timestep = timestep.to(dev).float().expand(batch) if timestep.dim() else timestep.to(dev).float().repeat(batch)

        key_mask = None
        if txt_mask is not None:
            txt_mask = txt_mask.to(dev).bool()
            if batch == 1:  # drop padding: same result as masking, and no mask for the kernels
                txt, txt_mask = txt[:, txt_mask[0]], None
            elif bool(txt_mask.all()):
                txt_mask = None

        pooled_vec = self.vector_in(pooled)
        vec = self.time_in(timestep, dt) + pooled_vec
        if self.guidance_in is not None:
            g = guidance.to(dev).float()
            vec = vec + self.guidance_in(g.expand(batch) if g.dim() else g.repeat(batch), dt)

        blocks_vec = vec
        if first_frame_tokens:
            first = self.time_in(torch.zeros_like(timestep), dt) + pooled_vec
            blocks_vec = FirstTokens(first, vec, int(first_frame_tokens))

        tokens, (cos, sin), start = self.image_input(x, grid, context)
        n_img = tokens.n
        split = self.token_split(n_img)  # this rank's share of the image tokens (all of them on one device)
        chunk = (self.chunk_tokens or split.auto_chunk(txt.shape[1])) if self.lean else None
        cache = self.step_cache  # sampling/step_cache.py: may reuse the blocks' last residual
        img = tokens.whole() if cache is not None else None  # a cache decides on the whole sequence
        if cache is not None:
            skipped = cache.before_blocks(img, probe=lambda img=img: self.first_block_modulated_input(img, blocks_vec))
            if skipped is not None:  # no block runs (nor the text refiner: the text is not needed)
                return self.unpatchify(self.final(skipped, vec, n_img, chunk, start), grid, x.shape)
        txt, txt_mask = self.context_input(self.txt_in(txt, timestep, txt_mask), txt_mask, context)
        if txt_mask is not None:
            key_mask = torch.cat((torch.ones(batch, n_img, dtype=torch.bool, device=dev), txt_mask), 1)
        attend = split.attention(key_mask)
        img_in = img.clone() if cache is not None and not cache.pauses_after_first_block else None
        img = split.local(img) if img is not None else split.local_tokens(tokens)  # ranks: the share made alone
        del tokens
        (cos, sin), blocks_vec = split.local_rope(cos, sin), split.local_vec(blocks_vec)
        n_local = img.shape[1]

        for k, block in enumerate(self.double_blocks):
            before = split.gather(img.clone()) if k == 0 and cache is not None and cache.pauses_after_first_block else None
            img, txt = block(img, txt, blocks_vec, cos, sin, attend, chunk=chunk)
            if before is not None:  # First-Block Cache decides here, on the whole sequence
                skipped = cache.after_first_block(before, split.gather(img))
                del before
                if skipped is not None:
                    del img, txt
                    return self.unpatchify(self.final(skipped, vec, n_img, chunk, start), grid, x.shape)
        tokens = torch.cat((img, txt), 1)
        del img, txt
        for block in self.single_blocks:
            tokens = block(tokens, blocks_vec, cos, sin, n_local, attend, chunk=chunk)
        if cache is None:
            out = self.final_over(split, tokens, vec, n_local, chunk, start)
        else:  # the cache keeps the whole sequence's residual (it decides on the whole, as on one device)
            img = split.gather(tokens[:, :n_local])
            del tokens
            cache.after_blocks(img_in, img)
            del img_in
            out = self.final(img, vec, n_img, chunk, start)
        return self.unpatchify(out, grid, x.shape)

    def image_input(self, x: torch.Tensor, grid: tuple, context: dict):
        """The image tokens the blocks see (ImageTokens: made when asked, a rank's share alone), their RoPE
        (cos, sin) and the first token the final layer predicts: here the patched latents, all of them."""
        return ImageTokens(self.image_tokens(x.shape), lambda a, b: self.img_in.tokens(x, a, b)), self.rope(grid), 0

    def context_input(self, txt: torch.Tensor, txt_mask: torch.Tensor | None, context: dict):
        """The refined text tokens (and key mask) the blocks see: here the text alone."""
        return txt, txt_mask
