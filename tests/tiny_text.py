"""Tiny random LLaVA-Llama-3 and CLIP-L text encoders saved in the layouts users have, their
tokenizers, and diffusers' `HunyuanVideoPipeline.encode_prompt` as the reference."""

from __future__ import annotations

import copy
import json
import os
import re
from typing import NamedTuple

import torch
from safetensors.torch import save_file

from hystream.families.hunyuan_video.demo import write_tiny_clip_tokenizer, write_tiny_llama_tokenizer
from hystream.families.hunyuan_video.prompt import VIDEO_TEMPLATE

LLAMA_LAYERS = 5  # the encoder uses the first 3 (output of layer N-2)


def tokenizers(folder: str):
    from transformers import CLIPTokenizer, PreTrainedTokenizerFast

    write_tiny_llama_tokenizer(folder)
    write_tiny_clip_tokenizer(folder)
    llama = PreTrainedTokenizerFast(tokenizer_file=os.path.join(folder, "tokenizer.json"),
                                    bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", pad_token="<|end_of_text|>")
    clip = CLIPTokenizer(os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt"))
    return llama, clip


def reference_models(llama_tok, clip_tok, seed: int = 0, hidden: int = 512, kv_heads: int = 2):
    """transformers LlamaModel and CLIPTextModel with random weights rounded to fp16 (the files are fp16).
    Head dim 128 as the real model, several query heads sharing fewer KV heads (the real one: 32 / 8)."""
    import transformers

    torch.manual_seed(seed)
    lcfg = transformers.LlamaConfig(vocab_size=len(llama_tok), hidden_size=hidden, intermediate_size=2 * hidden,
                                    num_hidden_layers=LLAMA_LAYERS, num_attention_heads=hidden // 128,
                                    num_key_value_heads=kv_heads, head_dim=128, rms_norm_eps=1e-5,
                                    rope_theta=500000.0, max_position_embeddings=8192, initializer_range=0.1)
    llama = transformers.LlamaModel(lcfg).eval()
    ccfg = transformers.CLIPTextConfig(vocab_size=len(clip_tok), hidden_size=128, intermediate_size=256,
                                       num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77,
                                       hidden_act="quick_gelu", eos_token_id=clip_tok.eos_token_id,
                                       bos_token_id=clip_tok.bos_token_id, pad_token_id=clip_tok.pad_token_id,
                                       initializer_range=0.1)
    clip = transformers.CLIPTextModel(ccfg).eval()
    with torch.no_grad():
        for model in (llama, clip):
            for p in model.parameters():
                p.copy_(p.half().float())
            for name, p in model.named_parameters():
                if "norm" in name and name.endswith("weight"):
                    p.copy_((1 + 0.1 * torch.randn_like(p)).half().float())
    return llama, clip


def quantise(sd: dict[str, torch.Tensor]):
    """Comfy scaled fp8 for the decoder layers' Linear weights; returns (file dict, dequantised)."""
    out, deq = {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}, {}
    for k, v in sd.items():
        if re.match(r"layers\.\d+\..*_proj\.weight$", k):
            scale = v.abs().max().float() / 448.0
            q = (v.float() / scale).to(torch.float8_e4m3fn)
            out[k], out[k[:-6] + "scale_weight"] = q, scale.reshape(())
            deq[k] = q.float() * scale
        else:
            out[k], deq[k] = v.half(), v
    return out, deq


def save_llama(llama, layout: str, folder: str, tok_folder: str) -> tuple[str, dict | None]:
    """Write the Llama in a layout. Returns (path to give HyStream, dequantised weights for fp8 or None)."""
    sd = {k: v.detach().clone() for k, v in llama.state_dict().items()}
    os.makedirs(folder, exist_ok=True)
    vocab, hidden = sd["embed_tokens.weight"].shape
    if layout == "comfy_fp16":
        path = os.path.join(folder, "llava_llama3_fp16.safetensors")
        file = {"model." + k: v.half() for k, v in sd.items()}
        file["lm_head.weight"] = torch.randn(vocab, hidden).half()
        save_file(file, path)
        return path, None
    if layout == "comfy_fp8_scaled":
        path = os.path.join(folder, "llava_llama3_fp8_scaled.safetensors")
        q, deq = quantise(sd)
        save_file({("model." + k if k != "scaled_fp8" else k): v for k, v in q.items()}, path)
        return path, deq
    if layout == "xtuner_llava":  # full LLaVA folder: language model + vision tower + projector, sharded
        root = os.path.join(folder, "llava-llama-3-8b-v1_1-transformers")
        os.makedirs(root, exist_ok=True)
        tensors = {"language_model.model." + k: v.half() for k, v in sd.items()}
        tensors["language_model.lm_head.weight"] = torch.randn(vocab, hidden).half()
        tensors["vision_tower.vision_model.embeddings.patch_embedding.weight"] = torch.randn(8, 3, 4, 4).half()
        tensors["multi_modal_projector.linear_1.weight"] = torch.randn(hidden, 8).half()
        names = sorted(tensors)
        shards = [names[: len(names) // 2], names[len(names) // 2:]]
        weight_map = {}
        for i, part in enumerate(shards):
            fname = f"model-{i + 1:05d}-of-00002.safetensors"
            save_file({n: tensors[n] for n in part}, os.path.join(root, fname))
            weight_map.update({n: fname for n in part})
        with open(os.path.join(root, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": weight_map}, f)
        for fname in ("tokenizer.json", "tokenizer_config.json"):
            with open(os.path.join(tok_folder, fname)) as src, open(os.path.join(root, fname), "w") as dst:
                dst.write(src.read())
        return root, None
    if layout == "diffusers":
        root = os.path.join(folder, "HunyuanVideo")
        copy.deepcopy(llama).half().save_pretrained(os.path.join(root, "text_encoder"), safe_serialization=True)
        os.makedirs(os.path.join(root, "tokenizer"), exist_ok=True)
        for fname in ("tokenizer.json", "tokenizer_config.json"):
            with open(os.path.join(tok_folder, fname)) as src, open(os.path.join(root, "tokenizer", fname), "w") as dst:
                dst.write(src.read())
        return root, None
    raise ValueError(layout)


def save_clip(clip, layout: str, folder: str) -> str:
    os.makedirs(folder, exist_ok=True)
    sd = {k if k.startswith("text_model.") else "text_model." + k: v.detach().half()
          for k, v in clip.state_dict().items() if not k.endswith("position_ids")}
    if layout == "clip_l":
        path = os.path.join(folder, "clip_l.safetensors")
        hidden = sd["text_model.final_layer_norm.weight"].shape[0]
        save_file(dict(sd, **{"text_projection.weight": torch.randn(hidden, hidden).half()}), path)
        return path
    if layout == "hf_folder":
        path = os.path.join(folder, "clip-vit-large-patch14")
        clip.save_pretrained(path, safe_serialization=True)
        return path
    raise ValueError(layout)


def user_start(tokenizer, prompt: str) -> int:
    """The test's own crop: the first token whose characters lie in the user's text (offsets)."""
    text = VIDEO_TEMPLATE.format(prompt)
    enc = tokenizer(text, return_offsets_mapping=True)
    start = VIDEO_TEMPLATE.index("{}")
    return next(i for i, (a, b) in enumerate(enc["offset_mapping"]) if b > a >= start)


def reference_encode(llama, clip, llama_tok, clip_tok, prompt: str):
    """diffusers' HunyuanVideoPipeline.encode_prompt on the same models, with the test's crop."""
    from diffusers import FlowMatchEulerDiscreteScheduler, HunyuanVideoPipeline

    pipe = HunyuanVideoPipeline(text_encoder=llama, tokenizer=llama_tok, transformer=None, vae=None,
                                scheduler=FlowMatchEulerDiscreteScheduler(), text_encoder_2=clip, tokenizer_2=clip_tok)
    crop = user_start(llama_tok, prompt)
    with torch.no_grad():
        embeds, pooled, mask = pipe.encode_prompt(prompt, prompt_template={"template": VIDEO_TEMPLATE, "crop_start": crop},
                                                  device=torch.device("cpu"), dtype=torch.float32,
                                                  max_sequence_length=256)
    return embeds, pooled, mask


class TextModels(NamedTuple):
    """The tiny tokenizers (written to `tok_dir`) and the reference Llama and CLIP built from them."""

    tok_dir: str
    llama_tok: object
    clip_tok: object
    llama: torch.nn.Module
    clip: torch.nn.Module


def text_models(tok_dir: str) -> TextModels:
    llama_tok, clip_tok = tokenizers(tok_dir)
    return TextModels(tok_dir, llama_tok, clip_tok, *reference_models(llama_tok, clip_tok))
