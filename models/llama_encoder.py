"""A text encoder that is a transformers Llama-architecture decoder (LLaVA-Llama-3, Qwen2.5), config from
shapes plus the facts the family gives (architecture, head dim, RoPE theta, norm eps, how many last layers
are skipped).

Two architectures: "llama" (transformers' LlamaModel: q/k/v/o biases all or none) and "qwen2" (Qwen2Model:
q/k/v biases, none on o_proj). Qwen2.5-VL's language model is a Qwen2 decoder whose multimodal RoPE (mrope
sections over t/h/w) gives every section the same angles when all position ids are text positions, so for a
prompt without images it is plain 1-D RoPE: Qwen2Model's layers give bit-identical states
(tests/test_text15.py checks it against Qwen2_5_VLTextModel).

Only what is used is built: the first N−k decoder layers (the families condition on the output of layer
N−k, `hidden_states[-k-1]`, before the final norm), no final norm, no LM head, no embedding table
(rows are looked up on the host and only those rows reach the device). The layers' Linear and RMSNorm
modules are swapped for ours, which compute in the activation dtype whatever the stored dtype (fp16,
bf16, fp8 with scale), so streamed fp8 weights stay fp8 until they are used. (Llama's RMSNorm is the
same computation as the DiT's q/k norm, with eps 1e-5.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import StateDictError, UnsupportedVariantError
from .layers import Linear, RMSNorm
from .shapes import shape_reader


@dataclass(frozen=True)
class DecoderFacts:
    """What the weights do not tell about a family's text decoder."""

    name: str  # for messages, e.g. "LLaVA-Llama-3"
    files: str  # the files to pick, for messages
    head_dim: int = 128
    rope_theta: float = 500000.0
    rms_eps: float = 1e-5
    skip_last_layers: int = 2  # hidden_states[-3]: the output of layer N-2
    architecture: str = "llama"  # "llama" (LlamaModel) or "qwen2" (Qwen2Model: q/k/v biases, no o_proj bias)
    fp16_ok: bool = True  # may `auto` compute in fp16 (Qwen2.5's activations overflow it)
    depth_by_width: tuple[tuple[int, int], ...] = ()  # (hidden, layers) of released models: a file with fewer
    # layers at that width was cut short (the layer count is otherwise only what the file holds)


def infer_llama_config(shapes: dict[str, tuple[int, ...]], describe: str, facts: DecoderFacts):
    """A transformers LlamaConfig from Llama-named shapes (prefix already stripped)."""
    import transformers

    HEAD_DIM, SKIP_LAST_LAYERS = facts.head_dim, facts.skip_last_layers
    shape = shape_reader(shapes, f"a {facts.name} text encoder", describe, f"the file is incomplete or not {facts.name}")

    vocab, hidden = shape("embed_tokens.weight")
    q_rows, q_in = shape("layers.0.self_attn.q_proj.weight")
    k_rows = shape("layers.0.self_attn.k_proj.weight")[0]
    if hidden % HEAD_DIM or q_rows % HEAD_DIM or k_rows % HEAD_DIM:
        raise UnsupportedVariantError(
            f"a {facts.name} with head dim {HEAD_DIM} (hidden size a multiple of {HEAD_DIM})",
            f"hidden size {hidden}, q_proj rows {q_rows}, k_proj rows {k_rows} in {describe}",
            f"use {facts.files}")
    if q_in != hidden:
        raise StateDictError("q_proj input width = embedding width", f"{q_in} vs {hidden} in {describe}",
                             "the file mixes tensors of different models")
    ids = {int(m.group(1)) for k in shapes if (m := re.match(r"layers\.(\d+)\.", k))}
    layers = len(ids)
    if layers <= SKIP_LAST_LAYERS:
        raise StateDictError(f"more than {SKIP_LAST_LAYERS} decoder layers", f"{layers} in {describe}",
                             "the file is incomplete")
    gaps = sorted(set(range(max(ids) + 1)) - ids)
    released = dict(facts.depth_by_width).get(hidden)
    if gaps or (released and layers < released):
        found = f"layers {gaps[:6]} absent" if gaps else f"{layers} layers where the released model has {released}"
        raise StateDictError(f"every decoder layer of {facts.name}", f"{found} in {describe}",
                             "the file is incomplete (a cut-short download or a partial save): download it again")
    kwargs = {"vocab_size": vocab, "hidden_size": hidden,
              "intermediate_size": shape("layers.0.mlp.gate_proj.weight")[0],
              "num_hidden_layers": layers - SKIP_LAST_LAYERS, "num_attention_heads": q_rows // HEAD_DIM,
              "num_key_value_heads": k_rows // HEAD_DIM, "head_dim": HEAD_DIM, "rms_norm_eps": facts.rms_eps,
              "max_position_embeddings": 8192, "tie_word_embeddings": False}
    if facts.architecture == "qwen2":  # its biases are fixed by the architecture; a file without them is refused
        cfg = transformers.Qwen2Config(rope_theta=facts.rope_theta, use_sliding_window=False, **kwargs)
    else:
        cfg = transformers.LlamaConfig(rope_theta=facts.rope_theta, **kwargs,  # 5.x moves theta into rope_parameters
                                       attention_bias="layers.0.self_attn.q_proj.bias" in shapes,
                                       mlp_bias="layers.0.mlp.gate_proj.bias" in shapes)
    cfg._attn_implementation = "sdpa"
    cfg.total_layers = layers
    return cfg


def _swap_modules(module: nn.Module) -> None:
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear):
            setattr(module, name, Linear(child.in_features, child.out_features, bias=child.bias is not None))
        elif type(child).__name__.endswith("RMSNorm"):
            setattr(module, name, RMSNorm(child.weight.shape[0], child.variance_epsilon))
        else:
            _swap_modules(child)


# A decoder layer streams as its weight-holding submodules, in the order its forward calls them (one each),
# so a ring slot holds one projection (the largest: an MLP matrix, ~1/4 of the layer), not the layer.
LAYER_PARTS = ("input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


class LlamaStates(nn.Module):
    """Embeddings in, the output of layer N−2 out (no final norm). A LlamaModel, or a Qwen2Model for a
    "qwen2" config."""

    def __init__(self, config, device: torch.device):
        super().__init__()
        import transformers
        from transformers.models.llama import modeling_llama
        from transformers.models.qwen2 import modeling_qwen2

        qwen2 = config.model_type == "qwen2"
        with torch.device("meta"):
            self.model = (transformers.Qwen2Model if qwen2 else transformers.LlamaModel)(config)
        _swap_modules(self.model.layers)
        for layer in self.model.layers:  # a plain attribute (a tuple), outside the module tree
            layer.parts = tuple((path, layer.get_submodule(path)) for path in LAYER_PARTS)
        self.model.norm = nn.Identity()
        self.model.embed_tokens = None  # looked up on the host
        rotary = modeling_qwen2.Qwen2RotaryEmbedding if qwen2 else modeling_llama.LlamaRotaryEmbedding
        with torch.device("cpu"):  # real frequencies (the meta skeleton's are placeholders)
            self.model.rotary_emb = rotary(config=config).to(device)
        self.hidden = config.hidden_size

    @property
    def layers(self) -> list[nn.Module]:
        return list(self.model.layers)

    @property
    def blocks(self) -> list[nn.Module]:
        """The streamed blocks: the decoder layers."""
        return self.layers

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        return self.model(inputs_embeds=embeds, use_cache=False).last_hidden_state

