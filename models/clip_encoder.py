"""CLIP-L's pooled text vector for HunyuanVideo's `vector_in`, from transformers' CLIPTextModel with its
config read from tensor shapes (head dim 64, quick_gelu)."""

from __future__ import annotations

import re

import torch
from torch import nn

from ..errors import StateDictError
from .shapes import shape_reader

HEAD_DIM = 64


def infer_clip_config(shapes: dict[str, tuple[int, ...]], describe: str, *, eos_token_id: int,
                      bos_token_id: int, pad_token_id: int):
    import transformers

    shape = shape_reader(shapes, "a CLIP text encoder", describe, "the file is incomplete or not a CLIP text encoder")

    vocab, hidden = shape("embeddings.token_embedding.weight")
    if hidden % HEAD_DIM:
        raise StateDictError(f"a CLIP width that is a multiple of the head dim {HEAD_DIM}", f"width {hidden} in {describe}",
                             "use the CLIP text encoder file of the model family")
    layers = len({int(m.group(1)) for k in shapes if (m := re.match(r"encoder\.layers\.(\d+)\.", k))})
    return transformers.CLIPTextConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=shape("encoder.layers.0.mlp.fc1.weight")[0],
        num_hidden_layers=layers, num_attention_heads=hidden // HEAD_DIM,
        max_position_embeddings=shape("embeddings.position_embedding.weight")[0], hidden_act="quick_gelu",
        layer_norm_eps=1e-5, eos_token_id=eos_token_id, bos_token_id=bos_token_id, pad_token_id=pad_token_id,
        projection_dim=hidden)


class ClipPooled(nn.Module):
    """Token ids [B, 77] → pooled output [B, hidden] (final-norm state at the first end-of-text token)."""

    def __init__(self, config):
        super().__init__()
        import transformers

        with torch.device("meta"):
            self.model = transformers.CLIPTextModel(config)
        self.max_positions = config.max_position_embeddings

    def expected_keys(self) -> list[str]:
        """Names as this transformers version's CLIPTextModel spells them (with or without text_model.)."""
        return list(self.model.state_dict().keys())

    def load(self, state: dict[str, torch.Tensor], device, dtype) -> None:
        self.model.load_state_dict({k: v.to(device=device, dtype=dtype) for k, v in state.items()},
                                   strict=False, assign=True)
        for name, buf in self.model.named_buffers():
            if name.endswith("position_ids"):  # non-persistent: rebuild it on the device
                owner = self.model.get_submodule(name.rpartition(".")[0])
                owner.position_ids = torch.arange(self.max_positions, device=device).expand(1, -1)
        self.model.eval()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids).pooler_output
