"""Tiny random HunyuanVideo 1.5 text encoders in the real file layouts, for the tests and the demo: Qwen2.5-VL's
language model (as transformers' Qwen2_5_VLTextModel, so tests can run it as the reference) and the ByT5
glyph encoder (T5EncoderModel), written as Comfy-Org, diffusers and full Qwen2.5-VL folders hold them; small
tokenizers with the real ones' conventions. Real head dim (128), RoPE theta, norm eps, mrope sections and
grouped KV heads; everything else tiny. The output is noise: these are not trained weights.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil

import torch

QWEN_HIDDEN, QWEN_HEADS, QWEN_KV_HEADS, QWEN_LAYERS = 256, 2, 1, 5  # the encoder runs the first 3 (N−2)
QWEN_VOCAB = 151669  # covers the real Qwen2.5 tokenizer's ids (the real table has 152064 rows)
BYT5_WIDTH, BYT5_HEADS, BYT5_LAYERS, BYT5_VOCAB = 128, 2, 2, 1510  # Glyph-SDXL's vocabulary (bytes + colours/fonts)
FILES = {"llm": "qwen_2.5_vl_7b_fp8_scaled.safetensors", "llm_fp16": "qwen_2.5_vl_7b.safetensors",
         "second_text": "byt5_small_glyphxl_fp16.safetensors"}
QWEN_LAYOUTS = ("comfy_fp16", "comfy_fp8_scaled", "diffusers", "hf_full", "hf_full_v5")
BYT5_LAYOUTS = ("comfy", "diffusers")


def _rounded(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Weights as the fp16 files hold them (so the reference runs exactly what was saved), norms near 1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            p.copy_(p.half().float())
    return model.eval()


def qwen_model(seed: int = 0, vocab: int = QWEN_VOCAB, layers: int = QWEN_LAYERS):
    """transformers' Qwen2_5_VLTextModel (diffusers' text_encoder) at a tiny width, random."""
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.Qwen2_5_VLTextConfig(
        vocab_size=vocab, hidden_size=QWEN_HIDDEN, intermediate_size=2 * QWEN_HIDDEN, num_hidden_layers=layers,
        num_attention_heads=QWEN_HEADS, num_key_value_heads=QWEN_KV_HEADS, rms_norm_eps=1e-6, initializer_range=0.1,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
        bos_token_id=None, eos_token_id=None, pad_token_id=None)
    return _rounded(transformers.Qwen2_5_VLTextModel(cfg), seed)


def byt5_model(seed: int = 0, vocab: int = BYT5_VOCAB):
    """transformers' T5EncoderModel (diffusers' text_encoder_2) shaped like byt5-small, tiny, random."""
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.T5Config(vocab_size=vocab, d_model=BYT5_WIDTH, d_kv=BYT5_WIDTH // BYT5_HEADS,
                                d_ff=2 * BYT5_WIDTH, num_layers=BYT5_LAYERS, num_heads=BYT5_HEADS,
                                feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False)
    return _rounded(transformers.T5EncoderModel(cfg), seed)


def _save(tensors: dict[str, torch.Tensor], folder: str, name: str) -> str:
    from safetensors.torch import save_file

    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    save_file({k: v.contiguous() for k, v in tensors.items()}, path)
    return path


def _sharded(tensors: dict[str, torch.Tensor], folder: str) -> str:
    """A Hugging Face folder: two shards and their index."""
    names = sorted(tensors)
    weight_map = {}
    for i, part in enumerate((names[: len(names) // 2], names[len(names) // 2:])):
        fname = f"model-{i + 1:05d}-of-00002.safetensors"
        _save({n: tensors[n] for n in part}, folder, fname)
        weight_map.update({n: fname for n in part})
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    return folder


def _copy_tokenizer(src: str | None, dst: str) -> None:
    if src:
        os.makedirs(dst, exist_ok=True)
        for name in os.listdir(src):
            if os.path.isfile(os.path.join(src, name)):
                shutil.copyfile(os.path.join(src, name), os.path.join(dst, name))


def vision_tower(prefix: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A few of Qwen2.5-VL's vision-tower tensors (never read by the text encoder), fp16."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"patch_embed.proj.weight": (16, 3, 2, 14, 14), "blocks.0.attn.qkv.weight": (48, 16),
              "blocks.0.mlp.gate_proj.weight": (32, 16), "merger.mlp.2.weight": (QWEN_HIDDEN, 64)}
    return {prefix + k: (0.05 * torch.randn(s, generator=g)).half() for k, s in shapes.items()}


def scaled_fp8(sd: dict[str, torch.Tensor], linear: str) -> tuple[dict, dict]:
    """Comfy's scaled_fp8: Linear weights matching `linear` as e4m3fn × an fp32 scale, the rest fp16.
    Returns (the file's tensors, the dequantised state: what the file means)."""
    out, deq = {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}, {}
    for k, v in sd.items():
        if re.search(linear, k):
            scale = (v.abs().max().float() / 448.0).clamp(min=1e-12)
            q = (v.float() / scale).to(torch.float8_e4m3fn)
            out[k], out[k[: -len("weight")] + "scale_weight"] = q, scale.reshape(())
            deq[k] = q.float() * scale
        else:
            out[k], deq[k] = v.half(), v.half().float()
    return out, deq


def write_qwen(model, layout: str, folder: str, tokenizer_dir: str | None = None) -> tuple[str, dict | None]:
    """The Qwen2.5-VL language model in a layout; returns (the path to give HyStream, the dequantised
    Qwen2_5_VLTextModel state for fp8, else None). Folders get the tokenizer copied where it ships."""
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    vocab, hidden = sd["embed_tokens.weight"].shape
    lm_head = {"lm_head.weight": (0.02 * torch.randn(vocab, hidden)).half()}
    if layout == "comfy_fp16":  # Comfy-Org: the whole Qwen2.5-VL, HF names of transformers 4.x
        file = {"model." + k: v.half() for k, v in sd.items()} | vision_tower("visual.") | lm_head
        return _save(file, folder, FILES["llm_fp16"]), None
    if layout == "comfy_fp8_scaled":
        q, deq = scaled_fp8(sd, r"layers\.\d+\..*_proj\.weight$")
        file = {(k if k == "scaled_fp8" else "model." + k): v for k, v in q.items()} | vision_tower("visual.") | lm_head
        return _save(file, folder, FILES["llm"]), deq
    if layout == "diffusers":  # a pipeline folder: text_encoder/ (Qwen2_5_VLTextModel.save_pretrained), tokenizer/
        root = os.path.join(folder, "HunyuanVideo-1.5-Diffusers")
        copy.deepcopy(model).half().save_pretrained(os.path.join(root, "text_encoder"), safe_serialization=True)
        _copy_tokenizer(tokenizer_dir, os.path.join(root, "tokenizer"))
        return root, None
    if layout in ("hf_full", "hf_full_v5"):  # Qwen2.5-VL-7B-Instruct as downloaded (Tencent's text_encoder/llm)
        lm, vision = ("model.", "visual.") if layout == "hf_full" else ("model.language_model.", "model.visual.")
        root = os.path.join(folder, "Qwen2.5-VL-7B-Instruct")
        _sharded({lm + k: v.half() for k, v in sd.items()} | vision_tower(vision) | lm_head, root)
        _copy_tokenizer(tokenizer_dir, root)
        return root, None
    raise ValueError(layout)


def write_byt5(model, layout: str, folder: str, tokenizer_dir: str | None = None) -> str:
    """The ByT5 glyph encoder: Comfy-Org's byt5_small_glyphxl_fp16 (shared.weight + encoder.*), or a
    diffusers pipeline folder's text_encoder_2/ (T5EncoderModel.save_pretrained) with tokenizer_2/."""
    if layout == "comfy":
        sd = {k: v.detach().half() for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}
        return _save(sd, folder, FILES["second_text"])
    if layout == "diffusers":
        root = os.path.join(folder, "HunyuanVideo-1.5-Diffusers")
        copy.deepcopy(model).half().save_pretrained(os.path.join(root, "text_encoder_2"), safe_serialization=True)
        _copy_tokenizer(tokenizer_dir, os.path.join(root, "tokenizer_2"))
        return root
    raise ValueError(layout)


# -- tokenizers ------------------------------------------------------------------------------------------------
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def write_tiny_qwen_tokenizer(folder: str) -> str:
    """A byte-level BPE Qwen2Tokenizer (Qwen2.5's split pattern and special tokens, a few merges) with
    Qwen2.5's chat layout (ChatML): its ids stay below 300, so a demo model's table is small."""
    from tokenizers import pre_tokenizers
    from transformers import Qwen2Tokenizer

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("Ġ", "a"), ("i", "n"), ("Ċ", "Ċ"), ("u", "s"), ("e", "r")]
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, eos_token="<|im_end|>",
                         pad_token="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHATML
    tok.save_pretrained(folder)
    return folder


def write_byt5_tokenizer(folder: str) -> str:
    """ByT5's tokenizer (bytes + 3 specials + 125 extra ids; it has no vocabulary file)."""
    from transformers import ByT5Tokenizer

    ByT5Tokenizer().save_pretrained(folder)
    return folder


def write_demo_text_models(text_encoders: str, seed: int = 0) -> dict[str, str]:
    """The demo's text encoders as a ComfyUI models/text_encoders folder holds them (Qwen fp8_scaled, ByT5
    fp16), tiny tokenizers beside them in tokenizer/ and tokenizer_2/. Returns {"llm", "second_text"}."""
    from transformers import Qwen2Tokenizer

    qwen_tok = os.path.join(text_encoders, "tokenizer")
    write_tiny_qwen_tokenizer(qwen_tok)
    write_byt5_tokenizer(os.path.join(text_encoders, "tokenizer_2"))
    vocab = len(Qwen2Tokenizer.from_pretrained(qwen_tok, local_files_only=True))
    llm, _ = write_qwen(qwen_model(seed, vocab=vocab), "comfy_fp8_scaled", text_encoders)
    return {"llm": llm, "second_text": write_byt5(byt5_model(seed), "comfy", text_encoders)}
