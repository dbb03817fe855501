"""HunyuanVideo 1.0's memory model for the planner: the full-size DiT, the LLaVA-Llama-3 + CLIP-L text stage,
the VAE decoder — real model classes on the meta device with the real shapes, what planner.py measures."""

from __future__ import annotations

import functools

import torch

from ...loaders.decoder_layers import ring_bytes
from ...models.clip_encoder import ClipPooled, infer_clip_config
from ...models.decoder_memory import decoder_layer_peak
from ...models.llama_encoder import LlamaStates, infer_llama_config
from .config import DiTConfig
from .dit_spec import DIT_SPEC
from .text_loader import LLAVA
from .vae import HunyuanVideoVAE, VAEConfig

LLAVA_SHAPES = {"embed_tokens.weight": (128320, 4096), "layers.0.self_attn.q_proj.weight": (4096, 4096),
                "layers.0.self_attn.k_proj.weight": (1024, 4096), "layers.0.mlp.gate_proj.weight": (14336, 4096),
                **{f"layers.{i}.input_layernorm.weight": (4096,) for i in range(32)}}
CLIP_L_SHAPES = {"embeddings.token_embedding.weight": (49408, 768), "embeddings.position_embedding.weight": (77, 768),
                 "encoder.layers.0.mlp.fc1.weight": (3072, 768),
                 **{f"encoder.layers.{i}.layer_norm1.weight": (768,) for i in range(12)}}
TEMPLATE_TOKENS = 95 + 256  # Tencent's video template with the real Llama-3 tokenizer + 256 user tokens


class HunyuanVideoMemory:
    text_tokens = 256  # the DiT's text tokens in a plan (the template's user budget)
    dit_spec = DIT_SPEC

    def dit_config(self) -> DiTConfig:
        return DiTConfig()

    def dit(self, cfg: DiTConfig):
        return DIT_SPEC.build(cfg, "meta")

    def text_stage(self, fp8: bool = True) -> tuple[int, int, str]:
        """(weights on the device, activations, settings) of the prompt stage: a ring of two slots of a LLaVA layer's largest projection (layers stream as their parts)
        (fp8 scaled or fp16), CLIP-L resident, the template's token count."""
        config = infer_llama_config(LLAVA_SHAPES, "LLaVA-Llama-3-8B", LLAVA)
        layer = LlamaStates(config, torch.device("cpu")).layers[0]
        name = "llava_llama3_fp8_scaled" if fp8 else "llava_llama3_fp16"
        return (ring_bytes(layer, fp8) + clip_l_params() * 2, llama_activations(TEMPLATE_TOKENS),
                f"{config.num_hidden_layers} layers of {name} streamed projection by projection through 2 slots, CLIP-L resident")

    def vae_decoder(self):
        """The decoder skeleton (meta) and its latent channels: what a tile's peak is measured on."""
        with torch.device("meta"):
            return HunyuanVideoVAE(VAEConfig()).decoder


MEMORY = HunyuanVideoMemory()


@functools.lru_cache(maxsize=1)
def clip_l_params() -> int:
    clip = ClipPooled(infer_clip_config(CLIP_L_SHAPES, "CLIP-L", eos_token_id=49407, bos_token_id=49406,
                                        pad_token_id=49407))
    return sum(p.numel() for p in clip.model.parameters())


def llama_activations(tokens: int) -> int:
    """One LLaVA layer's activation peak at `tokens` (layers run one after another: one has the peak)."""
    return decoder_layer_peak(infer_llama_config(LLAVA_SHAPES, "LLaVA-Llama-3-8B", LLAVA), tokens)
