"""Tiny random HunyuanVideo checkpoints in the real key layouts, for the demo and smoke runs.

They exercise exactly the code paths of the real files (layout detection, lazy loading, streaming),
at a size that runs in seconds on any CPU. The output is noise: these are not trained weights.
"""

from __future__ import annotations

import os

import torch

from .models.dit import HunyuanVideoDiT
from .models.dit_config import DiTConfig

TINY_DIT = DiTConfig(hidden=256, heads=2, depth_double=2, depth_single=4, depth_refiner=1, mlp_hidden=1024,
                     single_mlp_hidden=1024, refiner_mlp_hidden=1024, text_dim=64, pooled_dim=32)


def random_dit_state_dict(cfg: DiTConfig = TINY_DIT, seed: int = 0, dtype=torch.bfloat16) -> dict[str, torch.Tensor]:
    """Tencent-named weights: norms near 1, matrices scaled by 1/sqrt(fan-in)."""
    with torch.device("meta"):
        names = [(n, tuple(p.shape)) for n, p in HunyuanVideoDiT(cfg).named_parameters()]
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, shape in names:
        t = torch.randn(shape, generator=g)
        if "norm" in name:
            t = 1 + 0.1 * t
        elif len(shape) > 1:
            t = t / (t[0].numel() ** 0.5)
        else:
            t = 0.05 * t
        sd[name] = t.to(dtype).contiguous()
    return sd


def write_comfy_dit(folder: str, cfg: DiTConfig = TINY_DIT, seed: int = 0) -> str:
    """The DiT as Comfy-Org ships it (model.diffusion_model. prefix, bf16)."""
    from safetensors.torch import save_file

    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "hunyuan_video_t2v_720p_bf16.safetensors")
    save_file({"model.diffusion_model." + k: v for k, v in random_dit_state_dict(cfg, seed).items()}, path)
    return path


# -- tokenizers: small, with Llama-3's special tokens and CLIP's BPE conventions --------------------------
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


def _byte_alphabet() -> list[str]:
    from tokenizers import pre_tokenizers

    return sorted(pre_tokenizers.ByteLevel.alphabet())


def write_tiny_llama_tokenizer(folder: str) -> str:
    """A byte-level BPE tokenizer.json with Llama-3's special tokens and BOS post-processing."""
    import json

    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    os.makedirs(folder, exist_ok=True)
    vocab = {ch: i for i, ch in enumerate(_byte_alphabet())}
    merges = [("Ċ", "Ċ"), ("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("Ġ", "a"), ("i", "n"), ("Ġ", "c"), ("Ġc", "a")]
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([  # Llama-3's split pattern, then bytes
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(LLAMA_SPECIALS)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A $B",
                                                       special_tokens=[("<|begin_of_text|>", bos)])
    tok.save(os.path.join(folder, "tokenizer.json"))
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "pad_token": "<|end_of_text|>",
                   "model_max_length": 131072, "padding_side": "right",
                   "tokenizer_class": "PreTrainedTokenizerFast"}, f)
    return folder


def write_tiny_clip_tokenizer(folder: str) -> str:
    """vocab.json + merges.txt in CLIP's format (bytes, bytes + '</w>', a few merges, two specials)."""
    import json

    os.makedirs(folder, exist_ok=True)
    alphabet = _byte_alphabet()
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    for ch in alphabet:
        vocab[ch + "</w>"] = len(vocab)
    merges = [("t", "h"), ("th", "e</w>"), ("a", "t</w>"), ("c", "at</w>"), ("i", "n"), ("o", "f</w>")]
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    with open(os.path.join(folder, "vocab.json"), "w") as f:
        json.dump(vocab, f)
    with open(os.path.join(folder, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return folder
