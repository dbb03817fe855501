"""HunyuanVideo's dual-stream → single-stream diffusion transformer, written for streaming.

The module is built on the meta device; the loader binds the small parts (embedders, refiner, final
layer) and the streamer binds each block just before it runs, so this code never knows where its
weights live. Text padding is dropped for batch 1 (exactly equivalent to masking, and it keeps the
fused attention kernels usable); batch > 1 uses a key mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .dit_blocks import DoubleStreamBlock, SingleStreamBlock
from .dit_config import DiTConfig
from .layers import FirstTokens, LayerNorm, Linear, MLPEmbedder, PatchEmbed3d, TimestepEmbedder, modulate
from .lean import auto_chunk, chunks
from .rope import rope_cos_sin
from .token_refiner import TokenRefiner


class FinalLayer(nn.Module):
    def __init__(self, hidden: int, out_features: int):
        super().__init__()
        self.norm_final = LayerNorm(hidden, affine=False)
        self.linear = Linear(hidden, out_features)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), Linear(hidden, 2 * hidden))

    def forward(self, x, vec):
        shift, scale = (c.unsqueeze(1) for c in self.adaLN_modulation(vec).chunk(2, dim=-1))
        return self.linear(modulate(self.norm_final(x), shift, scale))


class HunyuanVideoDiT(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.cfg = cfg
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
        self.compute_dtype = torch.float32
        self.device = torch.device("cpu")
        self.lean = True  # chunked blocks (models/lean.py); False = the plain reference path
        self.chunk_tokens: int | None = None  # lean chunk size; None = automatic
        self.block_weight_dtype: torch.dtype | None = None  # how the blocks' Linears are stored (the loader says)
        self.step_cache = None  # a sampling run's step-cache policy (sampling/step_cache.py), or None
        self.first_block_modulation: nn.Module | None = None  # TeaCache's probe (see _first_block_modulated_input)
        self.sdpa_capability: tuple[int, int] | None = None  # the GPU's, for the attention kernel (None: ask it)
        self._rope: dict = {}  # (grid, device) → (cos, sin) on the device, for the run's steps

    def rope(self, grid: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE's cos/sin for a token grid, built once per size and device (float64 on the host, then one
        upload) instead of at every forward of a sampling run."""
        key = (tuple(grid), str(self.device))
        if key not in self._rope:
            self._rope.clear()  # one size at a time: a run's steps share it
            self._rope[key] = rope_cos_sin(grid, self.cfg.rope_axes, self.cfg.rope_theta, self.device)
        return self._rope[key]

    def clear_caches(self) -> None:
        """Drop what the model keeps on the device between forwards (nothing stays after a stage)."""
        self._rope.clear()

    def attention_kernel(self) -> str:
        """The SDPA kernel this model's attention will get (flash / efficient / math), see memory_probe."""
        from ..memory_probe import sdpa_kernel

        return sdpa_kernel(self.device.type, self.compute_dtype, self.sdpa_capability, self.cfg.head_dim)

    def activation_bytes(self, x_shape, text_tokens: int, chunk_tokens: int | None = None) -> int:
        """Peak activation memory of one forward at this size (weights excluded; their upcast and LoRA
        temporaries included), measured on fake tensors with this model's settings and the attention
        kernel SDPA will pick (models/dit_memory.py); what the memory budget plans with."""
        from .dit_memory import forward_peak_bytes

        device = "cuda" if self.device.type == "cuda" else "cpu"
        stored = self.block_weight_dtype if self.block_weight_dtype not in (None, self.compute_dtype) else None
        rank = max((a.up.shape[1] for m in self.modules() if isinstance(m, Linear) for a in m.lora), default=0)
        return forward_peak_bytes(self.cfg, tuple(x_shape), int(text_tokens), self.compute_dtype, self.lean,
                                  chunk_tokens or self.chunk_tokens, device, self.attention_kernel(), stored, rank)

    def choose_chunk(self, x_shape, text_tokens: int, limit_bytes: int) -> int | None:
        """The largest query chunk whose activations fit `limit_bytes` (halving from the automatic one), or
        None when the automatic chunk fits. It matters where SDPA falls back to its math kernel (scores of
        chunk × all tokens): elsewhere activations barely depend on the chunk."""
        from .dit_memory import MIN_CHUNK

        if not self.lean:
            return None
        tokens = x_shape[2] * (x_shape[3] // self.cfg.patch[1]) * (x_shape[4] // self.cfg.patch[2]) + int(text_tokens)
        chunk = auto_chunk(tokens)
        if self.activation_bytes(x_shape, text_tokens, chunk) <= limit_bytes:
            return None
        while chunk > MIN_CHUNK:
            chunk = max(MIN_CHUNK, chunk // 2)
            if self.activation_bytes(x_shape, text_tokens, chunk) <= limit_bytes:
                return chunk
        return MIN_CHUNK

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
                guidance: torch.Tensor | None = None, first_frame_tokens: int = 0) -> torch.Tensor:
        """x: latents [B, C, T, H, W]; timestep, guidance: [B] in 0..1000 units; txt: [B, L, text_dim];
        txt_mask: [B, L] (1 = valid) or None; pooled: [B, pooled_dim]. Returns the velocity like x.
        first_frame_tokens > 0 (HunyuanVideo-I2V token replace): the blocks modulate the first that many
        image tokens (the clean first latent frame) with t = 0 and no guidance; the text, the refiner and the
        final layer use the step's conditioning only."""
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

        img = self.img_in(x)
        n_img = img.shape[1]
        chunk = (self.chunk_tokens or auto_chunk(n_img + txt.shape[1])) if self.lean else None
        cache = self.step_cache  # sampling/step_cache.py: may reuse the blocks' last residual
        if cache is not None:
            skipped = cache.before_blocks(img, probe=lambda: self._first_block_modulated_input(img, blocks_vec))
            if skipped is not None:  # no block runs (nor the text refiner: the text is not needed)
                return self._unpatchify(self._final(skipped, vec, n_img, chunk), grid, x.shape)
        txt = self.txt_in(txt, timestep, txt_mask)
        if txt_mask is not None:
            key_mask = torch.cat((torch.ones(batch, n_img, dtype=torch.bool, device=dev), txt_mask), 1)
        cos, sin = self.rope(grid)
        img_in = img.clone() if cache is not None and not cache.pauses_after_first_block else None

        for k, block in enumerate(self.double_blocks):
            before = img.clone() if k == 0 and cache is not None and cache.pauses_after_first_block else None
            img, txt = block(img, txt, blocks_vec, cos, sin, key_mask, chunk=chunk)
            if before is not None:  # First-Block Cache decides here
                skipped = cache.after_first_block(before, img)
                del before
                if skipped is not None:
                    del img, txt
                    return self._unpatchify(self._final(skipped, vec, n_img, chunk), grid, x.shape)
        tokens = torch.cat((img, txt), 1)
        del img, txt
        for block in self.single_blocks:
            tokens = block(tokens, blocks_vec, cos, sin, n_img, key_mask, chunk=chunk)
        if cache is not None:
            cache.after_blocks(img_in, tokens[:, :n_img])
            del img_in
        out = self._final(tokens, vec, n_img, chunk)
        del tokens
        return self._unpatchify(out, grid, x.shape)

    def _final(self, tokens: torch.Tensor, vec: torch.Tensor, n_img: int, chunk: int | None) -> torch.Tensor:
        """The final layer on the image tokens (per chunk when lean: its output is only [n, 64])."""
        if chunk:
            return torch.cat([self.final_layer(tokens[:, a:b], vec) for a, b in chunks(n_img, chunk)], 1)
        return self.final_layer(tokens[:, :n_img], vec)

    def _unpatchify(self, out: torch.Tensor, grid: tuple, shape) -> torch.Tensor:
        batch, _, frames, height, width = shape
        pt, ph, pw = self.cfg.patch
        c = self.cfg.out_channels
        out = out.reshape(batch, *grid, c, pt, ph, pw).permute(0, 4, 1, 5, 2, 6, 3, 7)
        return out.reshape(batch, c, frames, height, width)

    def _first_block_modulated_input(self, img: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
        """TeaCache's probe: the first double block's modulated image input, from `first_block_modulation`
        (a copy of that block's img_mod the sampler keeps on the device: the block itself may stream)."""
        probe = self.first_block_modulation
        if probe is None:
            raise RuntimeError("TeaCache needs first_block_modulation (set by the sampler)")
        shift, scale = probe(vec)[:2]
        return modulate(F.layer_norm(img, (img.shape[-1],), eps=1e-6), shift, scale)
