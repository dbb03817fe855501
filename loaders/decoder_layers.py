"""A text encoder's decoder layers (a transformers Llama-architecture LM) as a streamed model: the spec
loaders/streamed.py loads it with, for any family whose text encoder is one.

Key layouts read: Hugging Face names under any prefix (`model.`, `language_model.model.`,
`model.language_model.`, none), and llama.cpp GGUF names (`blk.N.attn_q…`, `token_embd`) with q/k's RoPE
row permutation undone for Llama (llama.cpp permutes only Llama's q/k; Qwen2's rotate by halves as in
Hugging Face, so a `qwen2vl` GGUF is read as stored). Only layers 0…N−k are read (the family says k); the
embedding table stays in the file and only looked-up rows are read.
"""

from __future__ import annotations

import re

import torch

from ..errors import WrongModelError
from ..families.base import StreamedSpec
from ..models.llama_encoder import DecoderFacts, LlamaStates, infer_llama_config
from ..offload.units import StreamUnits
from .key_check import key_prefix
from .model_kind import describe_model
from .recipes import KeyLayout, Recipe
from .tensor_source import TensorSource

ANCHOR = "layers.0.self_attn.q_proj.weight"
CLIP_ANCHOR = "embeddings.token_embedding.weight"  # CLIP's layers also end in self_attn.q_proj
NOT_READ = ("norm.weight", "rotary_emb.inv_freq", "scaled_fp8")  # the final norm is never applied
# llama.cpp's names (a GGUF, as ComfyUI-GGUF's CLIP loader reads it) → Hugging Face's
LLAMA_CPP_NAMES = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
                   "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                   "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}
LLAMA_CPP_IGNORED = ("output.weight", "output_norm.weight", "rope_freqs.weight")


def is_llama_cpp(keys) -> bool:
    keys = set(keys)
    return "blk.0.attn_q.weight" in keys and "token_embd.weight" in keys


class DecoderLayersSpec(StreamedSpec):
    """facts: the family's decoder facts; extras: key prefixes of the file's other parts (a vision tower, the
    LM head) that are not read and not unexpected."""

    fp16_ok = True
    gguf_dtype = "float16"  # GGUF quants compute like the fp16 model they came from

    def __init__(self, facts: DecoderFacts, extras: tuple[str, ...] = ()):
        self.facts = facts
        self.extras = extras
        self.fp16_ok = facts.fp16_ok
        self.what = f"the {facts.name} text encoder"
        self.label = f"the {facts.name} text encoder"

    def layout(self, source: TensorSource) -> KeyLayout:
        keys = source.keys()
        if is_llama_cpp(keys):
            return self._llama_cpp(source)
        prefix = key_prefix(keys, ANCHOR)
        if prefix is None or key_prefix(keys, CLIP_ANCHOR) is not None:
            arch = {"llama": "Llama", "qwen2": "Qwen2"}.get(self.facts.architecture, self.facts.architecture)
            raise WrongModelError(f"a {self.facts.name} text encoder (HF {arch}-architecture names)",
                                  f"{describe_model(keys)} in {source.describe}", f"pick {self.facts.files}")
        recipes, unexpected = {}, []
        for k in keys:
            if k.startswith(prefix):
                local = k[len(prefix):]
                if not local.endswith(".scale_input") and local not in NOT_READ:
                    recipes[local] = Recipe((k,))
            elif not k.startswith(self.extras):
                unexpected.append(k)
        return KeyLayout("Hugging Face names" + (f" under {prefix!r}" if prefix else ""), recipes, unexpected, prefix)

    def _llama_cpp(self, source: TensorSource) -> KeyLayout:
        """blk.N.attn_q.weight → layers.N.self_attn.q_proj.weight, token_embd → embed_tokens; a Llama's q and
        k get llama.cpp's RoPE row permutation undone (heads from the rows and the family's head dim)."""
        recipes, unexpected = {}, []
        permuted = self.facts.architecture == "llama"
        for k in source.keys():  # noqa: SIM118 - a TensorSource: it has keys() but no __iter__
            m = re.match(r"blk\.(\d+)\.(\w+)\.(weight|bias)$", k)
            if k == "token_embd.weight":
                recipes["embed_tokens.weight"] = Recipe((k,))
            elif m and m.group(2) in LLAMA_CPP_NAMES:
                rotated = permuted and m.group(2) in ("attn_q", "attn_k")
                heads = source.info(k).shape[0] // self.facts.head_dim if rotated else 0
                recipes[f"layers.{m.group(1)}.{LLAMA_CPP_NAMES[m.group(2)]}.{m.group(3)}"] = Recipe((k,), unpermute_heads=heads)
            elif k not in LLAMA_CPP_IGNORED:
                unexpected.append(k)
        return KeyLayout("llama.cpp GGUF names", recipes, unexpected)

    def config(self, shapes: dict, source: TensorSource):
        return infer_llama_config(shapes, source.describe, self.facts)

    def build(self, cfg, device) -> LlamaStates:
        return LlamaStates(cfg, torch.device(device))

    def block_of(self, cfg, name: str) -> tuple[int, str] | None:
        m = re.match(r"layers\.(\d+)\.(.+)", name)
        return (int(m.group(1)), m.group(2)) if m else None

    def keep(self, cfg, name: str) -> bool:
        m = re.match(r"layers\.(\d+)\.", name)
        return not (m and int(m.group(1)) >= cfg.num_hidden_layers)  # the skipped last layers are never read

    def expected(self, model: LlamaStates, cfg) -> dict[str, tuple[int, ...]]:
        expected = {f"layers.{i}.{n}": tuple(p.shape) for i, layer in enumerate(model.layers)
                    for n, p in layer.named_parameters()}
        expected["embed_tokens.weight"] = (cfg.vocab_size, cfg.hidden_size)
        return expected

    def quantisable(self, name: str, shape: tuple) -> bool:
        return False  # stored as in the file (its own fp8 or GGUF types are kept)

    def reads_fixed(self, name: str) -> bool:
        return False  # the embedding table: only looked-up rows are read


def ring_bytes(layer: torch.nn.Module, fp8: bool, slots: int = 2) -> int:
    """Device bytes of a ring of `slots` holding a decoder layer's largest part (layers stream as their
    projections, see llama_encoder.LAYER_PARTS): matrices fp8 (scaled) or 16-bit."""
    return slots * max(sum(p.numel() * (1 if (fp8 and p.dim() == 2) else 2) for p in module.parameters())
                       for module in StreamUnits([layer]).modules)
