"""Tiny random FramePack DiTs in the layouts users have, and diffusers' `HunyuanVideoFramepackTransformer3DModel`
holding the same weights (the reference): lllyasviel's diffusers-format folder (sharded, with config.json),
kijai's single-file bf16 re-save and its fp8_e4m3fn re-save (block Linears in fp8, no scales)."""

from __future__ import annotations

import os
import re

import torch
from safetensors.torch import save_file

HIDDEN, HEADS, SIGLIP = 256, 2, 128
CONFIG = {"in_channels": 16, "out_channels": 16, "num_attention_heads": HEADS, "attention_head_dim": HIDDEN // HEADS,
              "num_layers": 2, "num_single_layers": 3, "num_refiner_layers": 2, "mlp_ratio": 4.0, "patch_size": 2, "patch_size_t": 1,
              "guidance_embeds": True, "text_embed_dim": 32, "pooled_projection_dim": 24, "has_image_proj": True,
              "image_proj_dim": SIGLIP, "has_clean_x_embedder": True}
BLOCK_LINEAR = re.compile(r"(transformer_blocks|single_transformer_blocks)\.\d+\..*\.weight$")


def reference_model(seed: int = 0):
    """diffusers' FramePack transformer with random weights everywhere (its init leaves some at zero)."""
    from diffusers import HunyuanVideoFramepackTransformer3DModel

    torch.manual_seed(seed)
    model = HunyuanVideoFramepackTransformer3DModel(**CONFIG).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_((1.0 if "norm" in name else 0.0) + 0.05 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
    return model


def reference_model_of(cfg):
    """diffusers' FramePack transformer shaped as our DiTConfig `cfg` says (weights left to the caller)."""
    from diffusers import HunyuanVideoFramepackTransformer3DModel

    return HunyuanVideoFramepackTransformer3DModel(
        in_channels=cfg.in_channels, out_channels=cfg.out_channels, num_attention_heads=cfg.heads,
        attention_head_dim=cfg.head_dim, num_layers=cfg.depth_double, num_single_layers=cfg.depth_single,
        num_refiner_layers=cfg.depth_refiner, mlp_ratio=cfg.mlp_hidden / cfg.hidden, patch_size=cfg.patch[1],
        patch_size_t=cfg.patch[0], guidance_embeds=cfg.guidance_embed, text_embed_dim=cfg.text_dim,
        pooled_projection_dim=cfg.pooled_dim, has_image_proj=True, image_proj_dim=cfg.image_proj_dim,
        has_clean_x_embedder=True).eval()


def save_layout(model, layout: str, folder: str) -> tuple[str, object]:
    """Write the model's weights as users have them. Returns (the path a user picks, the reference model that
    computes what the file holds: for fp8, the same model with the fp8-rounded block weights)."""
    os.makedirs(folder, exist_ok=True)
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if layout == "lllyasviel":
        root = os.path.join(folder, "FramePackI2V_HY")
        model.save_pretrained(root, max_shard_size="2MB", safe_serialization=True)
        return root, model
    if layout == "kijai_bf16":
        path = os.path.join(folder, "FramePackI2V_HY_bf16.safetensors")
        save_file(sd, path)
        return path, model
    if layout == "kijai_fp8":
        q = {k: v.to(torch.float8_e4m3fn) if BLOCK_LINEAR.match(k) and v.dim() == 2 else v for k, v in sd.items()}
        path = os.path.join(folder, "FramePackI2V_HY_fp8_e4m3fn.safetensors")
        save_file(q, path)
        rounded = reference_model()
        rounded.load_state_dict({k: v.float() for k, v in q.items()})
        return path, rounded
    raise ValueError(layout)


def section_inputs(batch: int = 1, frames: int = 3, height: int = 8, width: int = 12, history=(1, 2, 16),
                   padding: int = 3, valid=(7,), seed: int = 2) -> dict:
    """One inverted (anti-drifting) section's inputs as diffusers' pipeline builds them: noisy latents, text with
    right padding, pooled vector, SigLIP states, guidance ×1000, and the history with its frame indices."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(batch, 10, dtype=torch.long)
    for b, n in enumerate(valid):
        mask[b, :n] = 1
    idx = torch.arange(0, 1 + padding + frames + sum(history))
    prefix, _, latents, h1, h2, h4 = idx.split([1, padding, frames, *history])

    def lat(t):
        return torch.randn(batch, 16, t, height, width, generator=g)

    return {"x": lat(frames), "timestep": torch.tensor([700.0, 300.0][:batch]),
                "txt": torch.randn(batch, 10, 32, generator=g), "txt_mask": mask,
                "pooled": torch.randn(batch, 24, generator=g), "image_embeds": torch.randn(batch, 5, SIGLIP, generator=g),
                "guidance": torch.full((batch,), 10000.0), "indices": latents, "clean": lat(1 + history[0]),
                "clean_indices": torch.cat([prefix, h1]), "history_2x": lat(history[1]), "indices_2x": h2,
                "history_4x": lat(history[2]), "indices_4x": h4}


@torch.no_grad()
def reference_forward(model, i: dict) -> torch.Tensor:
    return model(hidden_states=i["x"], timestep=i["timestep"], encoder_hidden_states=i["txt"],
                 encoder_attention_mask=i["txt_mask"], pooled_projections=i["pooled"], image_embeds=i["image_embeds"],
                 indices_latents=i["indices"], guidance=i["guidance"], latents_clean=i["clean"],
                 indices_latents_clean=i["clean_indices"], latents_history_2x=i["history_2x"],
                 indices_latents_history_2x=i["indices_2x"], latents_history_4x=i["history_4x"],
                 indices_latents_history_4x=i["indices_4x"], return_dict=False)[0]


@torch.no_grad()
def our_forward(dit, i: dict) -> torch.Tensor:
    from hystream.families.hunyuan_video.framepack_dit import PackedHistory

    history = PackedHistory(i["indices"], i["clean"], i["clean_indices"], i["history_2x"], i["indices_2x"],
                            i["history_4x"], i["indices_4x"])
    return dit(i["x"], i["timestep"], i["txt"], i["txt_mask"], i["pooled"], i["guidance"], history=history,
               image_embeds=i["image_embeds"])
