"""HunyuanVideo 1.5's memory model for the planner: the full-size DiT (8.3B), the Qwen2.5-VL + ByT5 text stage,
the VAE decoder — real model classes on the meta device with the real shapes, what planner.py measures."""

from __future__ import annotations

import functools

import torch

from ...loaders.decoder_layers import ring_bytes
from ...models.decoder_memory import decoder_layer_peak
from ...models.llama_encoder import LlamaStates, infer_llama_config
from .config import DiTConfig
from .dit_spec import DIT_SPEC
from .memory import GLYPH_TOKENS, IMAGE_TOKENS
from .prompt import TEXT_TOKENS
from .text import ByT5Glyph, infer_byt5_config
from .text_loader import QWEN25
from .vae import HunyuanVideo15VAE, VAEConfig

QWEN_LAYERS = 28  # Qwen2.5-VL-7B's language model; the last 2 are not run
QWEN_SHAPES = {"embed_tokens.weight": (152064, 3584), "layers.0.self_attn.q_proj.weight": (3584, 3584),
               "layers.0.self_attn.q_proj.bias": (3584,), "layers.0.self_attn.k_proj.weight": (512, 3584),
               "layers.0.mlp.gate_proj.weight": (18944, 3584),
               **{f"layers.{i}.input_layernorm.weight": (3584,) for i in range(QWEN_LAYERS)}}
BYT5_LAYERS = 12  # Glyph-SDXL-v2's byt5-small encoder
BYT5_SHAPES = {"shared.weight": (1510, 1472),
               "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight": (32, 6),
               "encoder.block.0.layer.0.SelfAttention.q.weight": (384, 1472),
               "encoder.block.0.layer.1.DenseReluDense.wi_0.weight": (3584, 1472),
               **{f"encoder.block.{i}.layer.0.layer_norm.weight": (1472,) for i in range(BYT5_LAYERS)}}
TEMPLATE_HEAD = 108  # the system prompt's tokens before the user's text (prompt.py measures it per tokenizer)


class Hunyuan15Memory:
    # the DiT's context tokens in a plan: the whole prompt budget + the glyph text's + the start image's
    text_tokens = TEXT_TOKENS + GLYPH_TOKENS + IMAGE_TOKENS
    dit_spec = DIT_SPEC

    def dit_config(self) -> DiTConfig:
        return DiTConfig()

    def dit(self, cfg: DiTConfig):
        return DIT_SPEC.build(cfg, "meta")

    def text_stage(self, fp8: bool = True) -> tuple[int, int, str]:
        """(weights on the device, activations, settings) of the prompt stage: a ring of two slots of a Qwen2.5-VL layer's largest projection
        (fp8 scaled or bf16), ByT5 resident in fp16, the template's head + the whole prompt budget."""
        config = qwen_config()
        layer = LlamaStates(config, torch.device("cpu")).layers[0]
        act = max(decoder_layer_peak(config, TEMPLATE_HEAD + TEXT_TOKENS, torch.bfloat16), byt5_peak())
        name = "qwen_2.5_vl_7b_fp8_scaled" if fp8 else "qwen_2.5_vl_7b"
        used = QWEN_LAYERS - QWEN25.skip_last_layers
        return (ring_bytes(layer, fp8) + byt5_params() * 2, act,
                f"{used} of {QWEN_LAYERS} layers of {name} streamed projection by projection through 2 slots, ByT5 resident")

    def vae_decoder(self):
        """The decoder skeleton (meta): what a tile's peak is measured on."""
        with torch.device("meta"):
            return HunyuanVideo15VAE(VAEConfig()).decoder


MEMORY = Hunyuan15Memory()


def qwen_config():
    return infer_llama_config(QWEN_SHAPES, "Qwen2.5-VL-7B", QWEN25)


@functools.lru_cache(maxsize=1)
def byt5_params() -> int:
    return sum(p.numel() for n, p in ByT5Glyph(byt5_config()).model.named_parameters()
               if n != "encoder.embed_tokens.weight")


def byt5_config():
    return infer_byt5_config(BYT5_SHAPES, "ByT5-small (Glyph-SDXL-v2)")


@functools.lru_cache(maxsize=1)
def byt5_peak() -> int:
    """ByT5's activation peak over the whole glyph budget (it runs whole, beside the ring)."""
    from torch.func import functional_call

    from ...memory_probe import LiveBytes, fake_mode, flash_attention

    with flash_attention(), fake_mode():
        model = ByT5Glyph(byt5_config())
        params = {n: torch.empty(p.shape, dtype=torch.float16, device="cuda") for n, p in model.named_parameters()}
        ids = torch.zeros(1, GLYPH_TOKENS, dtype=torch.long, device="cuda")
        probe = LiveBytes(existing=[*params.values()])
        with probe:
            out = functional_call(model, params, (ids,))
        del out
    return probe.peak
