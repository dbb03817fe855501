"""Tell what model a set of checkpoint keys belongs to, for "you gave me the wrong file" errors.

Only key names are looked at (never tensor data), with the usual prefixes stripped.
"""

from __future__ import annotations

import re

PREFIXES = ("model.diffusion_model.", "diffusion_model.", "model.model.", "transformer.", "module.", "model.", "")

# (what it is, any of these key fragments)
SIGNATURES = [
    ("a LoRA file (low-rank adapter), not a full model", ("lora_up.", "lora_down.", "lora_A.", "lora_B.", ".lora.")),
    ("the HunyuanVideo transformer (DiT)", ("txt_in.individual_token_refiner.", "context_embedder.token_refiner.")),
    ("a 2D image VAE (Stable Diffusion / Flux / HunyuanImage style)", ("decoder.conv_in.weight",)),
    ("a HunyuanVideo VAE (causal 3D VAE)", ("decoder.up_blocks.", "decoder.up.", "encoder.down_blocks.", "encoder.down.",
                                           "decoder.conv_in.conv.", "decoder.mid.attn_1.")),
    ("LLaVA's vision tower (CLIP ViT + multimodal projector), for HyStreamTextEncodeImage's HunyuanVideo-I2V prompts",
     ("multi_modal_projector.",)),
    ("a CLIP vision model (class token, pre-layernorm: e.g. CLIP-L/14 or clip_vision_h)",
     ("embeddings.class_embedding", "pre_layrnorm.")),
    ("a CLIP text encoder (CLIP-L)", ("text_model.encoder.layers.", "text_model.embeddings.")),
    ("a Llama text encoder (LLaVA-Llama-3)", ("layers.0.self_attn.q_proj.", "embed_tokens.weight",
                                              "language_model.model.layers.")),
    ("a T5 text encoder", ("encoder.block.0.layer.0.SelfAttention.",)),
    ("a Flux DiT", ("double_blocks.0.img_attn.qkv.", "double_blocks.0.img_attn.norm.")),
    ("a Wan video DiT", ("blocks.0.self_attn.q.", "patch_embedding.")),
    ("an LTX-Video DiT", ("adaln_single.", "transformer_blocks.0.attn1.to_q.")),
    ("a Stable Diffusion UNet checkpoint", ("input_blocks.0.0.", "down_blocks.0.resnets.0.conv1.")),
]


def describe_model(keys) -> str:
    """'a HunyuanVideo VAE (causal 3D VAE)', ... or 'an unknown model' (with a few key names)."""
    keys = list(keys)
    for what, fragments in SIGNATURES:
        if any(f in k for k in keys for f in fragments):
            return what
    sample = ", ".join(keys[:3])
    return f"an unknown model (keys like {sample})" if keys else "an empty checkpoint (no tensors)"


# Key fragments (module names with '.' → '_') that only other model families' LoRAs have. Flux shares
# most of the MM-DiT names (and, at full size, HunyuanVideo's shapes), so its own names tell it apart.
FOREIGN_FAMILIES = [
    ("Flux", re.compile(r"(^|_)(img|txt)_mlp_[02]$|(^|_)(img|txt)_mod_lin$|(^|_)modulation_lin$|"
                        r"(^|_)(img|txt)_attn_norm_(query|key)_norm$")),
    ("Stable Diffusion / SDXL", re.compile(r"(^|_)(input|output)_blocks_\d|(^|_)(down|up)_blocks_\d+_(attentions|resnets)|"
                                           r"(^|_)mid_block_|^lora_te\d?_|(^|_)text_model_encoder_layers")),
    ("Wan", re.compile(r"(^|_)blocks_\d+_(self_attn|cross_attn)_(q|k|v|o)$|(^|_)blocks_\d+_ffn_[02]$")),
    ("LTX-Video", re.compile(r"(^|_)transformer_blocks_\d+_attn[12]_")),
]
FLUX_DEPTHS = (19, 38)  # Flux's double/single block counts


def foreign_family(modules: list[str], strip=lambda m: m) -> tuple[str, list[str]] | None:
    """(family, example keys) when a LoRA's module names (`strip` removes their file prefixes) belong to a
    family HyStream does not run, else None."""
    flat = [strip(m).replace(".", "_").lower() for m in modules]
    for family, pattern in FOREIGN_FAMILIES:
        hits = [m for m, f in zip(modules, flat) if pattern.search(f)]
        if hits:
            return family, hits
    # Flux LoRAs on the blocks both models share (attention, linear1/2; diffusers names are the same as
    # HunyuanVideo's throughout) are told apart by depth: exactly Flux's 19 + 38 blocks
    deepest = {}
    for f in flat:
        if (m := re.match(r"(single_transformer_blocks|transformer_blocks|double_blocks|single_blocks)_(\d+)_", f)):
            kind = "single" if m.group(1).startswith("single") else "double"
            deepest[kind] = max(deepest.get(kind, -1), int(m.group(2)))
    if (deepest.get("double"), deepest.get("single")) == (FLUX_DEPTHS[0] - 1, FLUX_DEPTHS[1] - 1):
        return "Flux", [(f"double blocks up to {FLUX_DEPTHS[0] - 1} and single blocks up to {FLUX_DEPTHS[1] - 1} "
                         f"(Flux's {FLUX_DEPTHS[0]} + {FLUX_DEPTHS[1]} blocks)")]
    return None
