"""Tell what model a set of checkpoint keys belongs to, for "you gave me the wrong file" errors.

Only key names are looked at (never tensor data), with the usual prefixes stripped.
"""

from __future__ import annotations

PREFIXES = ("model.diffusion_model.", "diffusion_model.", "model.model.", "transformer.", "module.", "model.", "")

# (what it is, any of these key fragments)
SIGNATURES = [
    ("a LoRA file (low-rank adapter), not a full model", ("lora_up.", "lora_down.", "lora_A.", "lora_B.", ".lora.")),
    ("the HunyuanVideo transformer (DiT)", ("txt_in.individual_token_refiner.", "context_embedder.token_refiner.")),
    ("a HunyuanVideo VAE (causal 3D VAE)", ("decoder.up_blocks.", "decoder.up.", "encoder.down_blocks.", "encoder.down.",
                                           "decoder.conv_in.conv.", "decoder.mid.attn_1.")),
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
