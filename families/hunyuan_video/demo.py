"""Tiny random HunyuanVideo models in the real file layouts users have, for the demo and smoke runs.

They exercise exactly the code paths of the real files (layout detection, lazy loading, streaming,
tokenizers found beside the weights) at a size that runs in seconds on any CPU, and they are also what
the host tests put in ComfyUI's model folders. The output is noise: these are not trained weights.
"""

from __future__ import annotations

import dataclasses
import os
import re

import torch

from .config import DiTConfig
from .dit import HunyuanVideoDiT

# widths tied together: the DiT's text input = the Llama's hidden size, its pooled input = CLIP's
LLAMA_HIDDEN, CLIP_HIDDEN = 512, 128
LLAMA_KV_HEADS = 2  # 4 query heads of 128 sharing 2 KV heads: grouped attention like the real 32 / 8
TINY_DIT = DiTConfig(hidden=256, heads=2, depth_double=2, depth_single=4, depth_refiner=1, mlp_hidden=1024,
                     single_mlp_hidden=1024, refiner_mlp_hidden=1024, text_dim=LLAMA_HIDDEN, pooled_dim=CLIP_HIDDEN)
FILES = {  # the names ComfyUI's example workflows (and ours) use
    "dit": ("diffusion_models", "hunyuan_video_t2v_720p_bf16.safetensors"),
    "i2v_dit": ("diffusion_models", "hunyuan_video_image_to_video_720p_bf16.safetensors"),  # Comfy-Org's I2V (33 ch)
    "llm": ("text_encoders", "llava_llama3_fp8_scaled.safetensors"),
    "clip": ("text_encoders", "clip_l.safetensors"),
    "vae": ("vae", "hunyuan_video_vae_bf16.safetensors"),
    "lora": ("loras", "hunyuan_video_demo_lora.safetensors"),
    "vision": ("clip_vision", "llava_llama3_vision.safetensors"),  # LLaVA's vision tower + projector (I2V prompts)
}


def random_dit_state_dict(cfg: DiTConfig = TINY_DIT, seed: int = 0, dtype=torch.bfloat16) -> dict[str, torch.Tensor]:
    """Tencent-named weights (FramePack's extra parts too, for a FramePack config): norms near 1, matrices scaled
    by 1/sqrt(fan-in)."""
    from .framepack_dit import FramePackDiT

    with torch.device("meta"):
        model = FramePackDiT(cfg) if cfg.framepack else HunyuanVideoDiT(cfg)
        names = [(n, tuple(p.shape)) for n, p in model.named_parameters()]
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


def _save(tensors: dict[str, torch.Tensor], folder: str, name: str) -> str:
    from safetensors.torch import save_file

    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    save_file({k: v.contiguous() for k, v in tensors.items()}, path)
    return path


def write_comfy_dit(folder: str, cfg: DiTConfig = TINY_DIT, seed: int = 0, name: str = FILES["dit"][1]) -> str:
    """The DiT as Comfy-Org ships it (model.diffusion_model. prefix, bf16)."""
    sd = {"model.diffusion_model." + k: v for k, v in random_dit_state_dict(cfg, seed).items()}
    return _save(sd, folder, name)


def _scaled_fp8(sd: dict[str, torch.Tensor], linear: str) -> dict[str, torch.Tensor]:
    """Comfy's scaled_fp8: Linear weights matching `linear` as e4m3fn × an fp32 scale, the rest fp16."""
    out = {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}
    for k, v in sd.items():
        if re.search(linear, k):
            scale = (v.abs().max().float() / 448.0).clamp(min=1e-12)
            out[k] = (v.float() / scale).to(torch.float8_e4m3fn)
            out[k[: -len("weight")] + "scale_weight"] = scale.reshape(())
        else:
            out[k] = v.half()
    return out


def write_comfy_llava(folder: str, vocab: int, seed: int = 0, layers: int = 5, scaled_fp8: bool = True) -> str:
    """LLaVA-Llama-3 as Comfy-Org ships it (HF names under model., lm_head kept): llava_llama3_fp8_scaled
    (Linear weights fp8 × scale_weight), or llava_llama3_fp16."""
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=vocab, hidden_size=LLAMA_HIDDEN, intermediate_size=2 * LLAMA_HIDDEN,
                                   num_hidden_layers=layers, num_attention_heads=LLAMA_HIDDEN // 128,
                                   num_key_value_heads=LLAMA_KV_HEADS, head_dim=128, initializer_range=0.1)
    model = transformers.LlamaForCausalLM(cfg)
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    if not scaled_fp8:
        return _save({k: v.half() for k, v in sd.items()}, folder, "llava_llama3_fp16.safetensors")
    return _save(_scaled_fp8(sd, r"layers\.\d+\..*_proj\.weight$"), folder, FILES["llm"][1])


def write_clip_l(folder: str, vocab: int, eos: int, bos: int, seed: int = 0) -> str:
    """CLIP-L's text model as clip_l.safetensors (HF names under text_model., fp16)."""
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.CLIPTextConfig(vocab_size=vocab, hidden_size=CLIP_HIDDEN, intermediate_size=2 * CLIP_HIDDEN,
                                      num_hidden_layers=2, num_attention_heads=CLIP_HIDDEN // 64,
                                      max_position_embeddings=77, hidden_act="quick_gelu", eos_token_id=eos,
                                      bos_token_id=bos, pad_token_id=eos)
    model = transformers.CLIPTextModel(cfg)
    sd = {(k if k.startswith("text_model.") else "text_model." + k): v.detach().half()
          for k, v in model.state_dict().items() if not k.endswith("position_ids")}
    return _save(sd, folder, FILES["clip"][1])


def write_llava_vision(folder: str, seed: int = 0) -> str:
    """LLaVA's vision tower + projector as ComfyUI's llava_llama3_vision.safetensors (vision_model.* and
    multi_modal_projector.*, fp16), a small CLIP ViT projecting to the tiny Llama's width."""
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.CLIPVisionConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=3, num_attention_heads=2,
                                        image_size=64, patch_size=16, hidden_act="quick_gelu")
    tower = transformers.CLIPVisionModel(cfg)
    sd = {(k if k.startswith("vision_model.") else "vision_model." + k): v.detach().half()
          for k, v in tower.state_dict().items() if not k.endswith("position_ids")}
    g = torch.Generator().manual_seed(seed)
    for name, shape in (("linear_1", (LLAMA_HIDDEN, 128)), ("linear_2", (LLAMA_HIDDEN, LLAMA_HIDDEN))):
        sd[f"multi_modal_projector.{name}.weight"] = (torch.randn(shape, generator=g) / shape[1] ** 0.5).half()
        sd[f"multi_modal_projector.{name}.bias"] = (0.02 * torch.randn(shape[0], generator=g)).half()
    return _save(sd, folder, FILES["vision"][1])


def vae_to_ldm(sd: dict[str, torch.Tensor], levels: int) -> dict[str, torch.Tensor]:
    """Our (diffusers-style) VAE names → the ldm names of Comfy-Org's repackaged VAE (ComfyUI's
    AutoencoderKL with conv3d): down.N.block.M / downsample, up.N (numbered from the output end)
    .block.M / upsample, mid.block_1 / attn_1 / block_2, nin_shortcut, norm_out; attention projections
    as 1×1×1 convolutions."""
    out = {}
    for k, v in sd.items():
        n = k.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
        n = re.sub(r"mid_block\.resnets\.0\.", "mid.block_1.", n)
        n = re.sub(r"mid_block\.resnets\.1\.", "mid.block_2.", n)
        m = re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(weight|bias)", n)
        if m:
            part = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}[m.group(2)]
            n = f"{m.group(1)}.mid.attn_1.{part}.{m.group(3)}"
            if part != "norm" and m.group(3) == "weight":
                v = v.reshape(*v.shape, 1, 1, 1)
        n = re.sub(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.", r"encoder.down.\1.block.\2.", n)
        n = re.sub(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", n)
        m = re.match(r"decoder\.up_blocks\.(\d+)\.(resnets\.(\d+)|upsamplers\.0)\.(.*)", n)
        if m:
            level = levels - 1 - int(m.group(1))
            inner = f"block.{m.group(3)}" if m.group(3) is not None else "upsample"
            n = f"decoder.up.{level}.{inner}.{m.group(4)}"
        out[n] = v.contiguous()
    return out


def write_comfy_vae(folder: str, seed: int = 0, full_size: bool = False, name: str = FILES["vae"][1],
                    ldm_names: bool = True) -> str:
    """A causal VAE in Comfy-Org's ldm layout (or, ldm_names=False, Tencent/kijai's diffusers-style names),
    bf16: small (channels 32/32/64/64, one resnet per level), or with the real widths (128/256/512/512,
    two per level) that ComfyUI's own VAE loader assumes."""
    from .vae import HunyuanVideoVAE, VAEConfig

    torch.manual_seed(seed)
    cfg = VAEConfig() if full_size else VAEConfig(block_out_channels=(32, 32, 64, 64), layers_per_block=1)
    with torch.device("meta"):
        model = HunyuanVideoVAE(cfg)
    model.to_empty(device="cpu")
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in model.state_dict().items():
        if k.endswith("weight") and v.dim() > 1:
            t = torch.randn(v.shape, generator=g) / (v[0].numel() ** 0.5)
        else:
            t = (1.0 if "norm" in k and k.endswith("weight") else 0.0) + 0.02 * torch.randn(v.shape, generator=g)
        sd[k] = t.to(torch.bfloat16)
    return _save(vae_to_ldm(sd, cfg.levels) if ldm_names else sd, folder, name)


def write_comfy_lora(folder: str, cfg: DiTConfig = TINY_DIT, rank: int = 4, seed: int = 0) -> str:
    """A LoRA on every double block's attention, in Comfy's key format."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for n in range(cfg.depth_double):
        for target, rows in (("img_attn_qkv", 3 * cfg.hidden), ("img_attn_proj", cfg.hidden)):
            base = f"diffusion_model.double_blocks.{n}.{target}"
            sd[base + ".lora_down.weight"] = torch.randn(rank, cfg.hidden, generator=g) * 0.05
            sd[base + ".lora_up.weight"] = torch.randn(rows, rank, generator=g) * 0.05
            sd[base + ".alpha"] = torch.tensor(float(rank))
    return _save({k: v.to(torch.bfloat16) for k, v in sd.items()}, folder, FILES["lora"][1])


def build_models(root: str) -> dict[str, str]:
    """All tiny models, as ComfyUI's models/ folders hold them (tokenizers beside the text encoders).
    Returns {"dit" | "i2v_dit" | "framepack_dit" | "framepack_f1_dit" | "llm" | "clip" | "vae" | "lora" | "vision":
    path, "models": root}. FramePack's SigLIP is the one HunyuanVideo 1.5's demo writes (clip_vision/)."""
    from ...loaders.tokenizer_files import load_clip_tokenizer, load_fast_tokenizer
    from .demo_framepack import F1_FILE, write_framepack_dit
    from .demo_framepack import FILE as FRAMEPACK_FILE

    te_dir = os.path.join(root, "text_encoders")
    write_tiny_llama_tokenizer(te_dir)
    write_tiny_clip_tokenizer(te_dir)
    llama_tok, clip_tok = load_fast_tokenizer(te_dir), load_clip_tokenizer(te_dir)
    return {
        "dit": write_comfy_dit(os.path.join(root, FILES["dit"][0])),
        "i2v_dit": write_comfy_dit(os.path.join(root, FILES["i2v_dit"][0]), dataclasses.replace(TINY_DIT, in_channels=33),
                                   seed=1, name=FILES["i2v_dit"][1]),
        "framepack_dit": write_framepack_dit(os.path.join(root, FRAMEPACK_FILE[0]), TINY_DIT),
        "framepack_f1_dit": write_framepack_dit(os.path.join(root, F1_FILE[0]), TINY_DIT, seed=8, name=F1_FILE[1]),
        "llm": write_comfy_llava(te_dir, len(llama_tok)),
        "clip": write_clip_l(te_dir, len(clip_tok), clip_tok.eos_token_id, clip_tok.bos_token_id),
        "vae": write_comfy_vae(os.path.join(root, FILES["vae"][0])),
        "lora": write_comfy_lora(os.path.join(root, FILES["lora"][0])),
        "vision": write_llava_vision(os.path.join(root, FILES["vision"][0])),
        "models": root,
    }


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
