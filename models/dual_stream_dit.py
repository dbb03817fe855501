"""What the HunyuanVideo-lineage DiTs share (1.0 and its I2V variants, 1.5, FramePack): latent tokens and
text tokens in dual-stream blocks (`double_blocks`) whose first block's image modulation TeaCache probes
and after which First-Block Cache decides, a final layer on the image tokens, patches back to latents.
Each family's DiT subclasses this with its own embedders, context and forward."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .dit_base import StreamedDiT
from .layers import LayerNorm, Linear, Modulation, modulate
from .lean import chunks


class FinalLayer(nn.Module):
    """adaLN (shift, scale) on the last norm, then the projection to patch values."""

    def __init__(self, hidden: int, out_features: int):
        super().__init__()
        self.norm_final = LayerNorm(hidden, affine=False)
        self.linear = Linear(hidden, out_features)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), Linear(hidden, 2 * hidden))

    def forward(self, x, vec):
        shift, scale = (c.unsqueeze(1) for c in self.adaLN_modulation(vec).chunk(2, dim=-1))
        return self.linear(modulate(self.norm_final(x), shift, scale))


class DualStreamDiT(StreamedDiT):
    """Subclasses build `double_blocks` (their first is where the step caches look), `final_layer`, and a
    `cfg` with `hidden`, `patch`, `out_channels` and `depth_refiner` (the refiner's blocks stream first)."""

    def __init__(self, cfg, estimator=None):
        super().__init__(cfg, estimator)
        self.first_block_modulation = None  # TeaCache's probe for a run (see use_step_cache)

    # -- step caching ----------------------------------------------------------------------------------
    def cache_decision_block(self) -> int:
        """The streamed block after which First-Block Cache decides, and whose modulation TeaCache probes:
        the first dual-stream block (after the token refiner's)."""
        return self.cfg.depth_refiner

    def use_step_cache(self, cache, probe_tensors: dict | None = None) -> None:
        """Consult `cache` (sampling/step_cache.py) in this run's forwards, None to stop. TeaCache's probe is
        a device copy of the first dual-stream block's img_mod (the block itself may stream), made from
        `probe_tensors` (that block's tensors on the host), sharing the run's LoRA adapters."""
        self.step_cache, self.first_block_modulation = cache, None
        if cache is not None and probe_tensors is not None:
            tensors = {n[len("img_mod."):]: t.to(self.device) for n, t in probe_tensors.items()
                       if n.startswith("img_mod.")}
            with torch.device("meta"):
                probe = Modulation(self.cfg.hidden, 6)
            source = self.double_blocks[0].img_mod.linear
            probe.linear.weight = nn.Parameter(tensors["linear.weight"], requires_grad=False)
            probe.linear.bias = nn.Parameter(tensors["linear.bias"], requires_grad=False)
            probe.linear.scale_weight = tensors.get("linear.scale_weight")  # scaled fp8: its scale too
            probe.linear.quant = source.quant  # a GGUF block keeps its bytes: decoded the same way
            probe.linear.lora = source.lora  # the run's LoRAs apply here too
            self.first_block_modulation = probe

    def first_block_modulated_input(self, img: torch.Tensor, vec) -> torch.Tensor:
        """TeaCache's probe: the first dual-stream block's modulated image input."""
        probe = self.first_block_modulation
        if probe is None:
            raise RuntimeError("TeaCache needs its probe: use_step_cache(cache, probe_tensors)")
        shift, scale = probe(vec)[:2]
        return modulate(F.layer_norm(img, (img.shape[-1],), eps=1e-6), shift, scale)

    # -- the way out -------------------------------------------------------------------------------------
    def final(self, tokens: torch.Tensor, vec: torch.Tensor, n_img: int, chunk: int | None, start: int = 0) -> torch.Tensor:
        """The final layer on the image tokens start..n_img (per chunk when lean: its output is only [n, patch
        values]); start > 0 where conditioning tokens precede the ones predicted (a packed history)."""
        if chunk:
            return torch.cat([self.final_layer(tokens[:, start + a:start + b], vec)
                              for a, b in chunks(n_img - start, chunk)], 1)
        return self.final_layer(tokens[:, start:n_img], vec)

    def final_over(self, split, tokens: torch.Tensor, vec: torch.Tensor, n_local: int, chunk: int | None,
                   start: int = 0) -> torch.Tensor:
        """The final layer on this rank's image tokens (the first n_local of `tokens`), the ranks' outputs
        gathered (patch values per token: ~1/48 of the hidden stream the blocks carried)."""
        if split.world == 1:
            return self.final(tokens, vec, n_local, chunk, start)
        return split.gather(self.final(tokens, vec, n_local, chunk))[:, start:]

    def unpatchify(self, out: torch.Tensor, grid: tuple, shape) -> torch.Tensor:
        batch, _, frames, height, width = shape
        pt, ph, pw = self.cfg.patch
        c = self.cfg.out_channels
        out = out.reshape(batch, *grid, c, pt, ph, pw).permute(0, 4, 1, 5, 2, 6, 3, 7)
        return out.reshape(batch, c, frames, height, width)
