"""Load HunyuanVideo's text encoders from the files users have.

LLaVA-Llama-3: Comfy-Org `llava_llama3_fp16.safetensors` / `llava_llama3_fp8_scaled.safetensors`
(HF-Llama names under `model.`, fp8 + `scale_weight`), xtuner / Kijai HF folders (sharded with an index,
tokenizer beside; full LLaVA files carry `language_model.` plus a vision tower and projector, which are
ignored), diffusers `text_encoder/` folders (LlamaModel names, no prefix). Only layers 0..N−3 are ever
read; they stream through `offload/`; the embedding table stays in the file and only the looked-up rows
are read.

CLIP-L: `clip_l.safetensors` (HF CLIPTextModel names with `text_model.`) or an HF / diffusers
`text_encoder_2/` folder. Small, so it is loaded whole onto the device.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import torch

from ..errors import StateDictError, WrongModelError, list_some
from ..models.clip_encoder import ClipPooled, infer_clip_config
from ..models.llama_encoder import LlamaStates, infer_llama_config
from ..models.text_encoder import HunyuanTextEncoder
from ..offload.settings import HostHandOver, StreamSettings
from ..offload.source import PackedSource
from ..offload.streamer import BlockStreamer
from .dtypes import compute_dtype, dominant_float_dtype
from .key_check import check_fp8_scales, check_tensors, key_prefix, scale_names
from .model_kind import describe_model
from .recipes import Recipe, block_sources, mark_quantised, recipe_meta
from .tensor_source import TensorSource, open_checkpoint
from .tokenizer_files import CLIP, LLAMA, find_tokenizer, load_clip_tokenizer, load_llama_tokenizer

LLAMA_ANCHOR = "layers.0.self_attn.q_proj.weight"
LLAVA_EXTRAS = ("vision_tower.", "multi_modal_projector.", "lm_head.", "language_model.lm_head.", "image_newline",
                "model.vision_tower.", "model.multi_modal_projector.", "scaled_fp8")
CLIP_ANCHOR = "embeddings.token_embedding.weight"
CLIP_IGNORED = ("text_projection.weight", "logit_scale", "embeddings.position_ids", "scaled_fp8", ".scale_input")
FP8_EXTRAS = (".scale_weight",)


@dataclass
class LoadedTextEncoder:
    encoder: HunyuanTextEncoder
    streamer: BlockStreamer
    llm_path: str
    clip_path: str
    sources: list[TensorSource] = field(repr=False, default_factory=list)

    def encode(self, prompt: str, use_cache: bool = True):
        return self.encoder.encode(prompt, use_cache)

    def encode_with_image(self, prompt: str, image_features: torch.Tensor, interleave: int):
        return self.encoder.encode_with_image(prompt, image_features, interleave)

    @property
    def stats(self):
        return self.streamer.stats

    def to_device(self) -> None:
        self.encoder.clip.to(self.encoder.device)

    def release_device(self) -> None:
        """Nothing on the compute device between prompts: CLIP-L goes to the host, no layer stays."""
        self.streamer.set_resident(())
        if self.encoder.device.type != "cpu":
            self.encoder.clip.to("cpu")

    def clip_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.encoder.clip.parameters())

    def host_tensors(self) -> list[torch.Tensor]:
        """The host RAM this encoder holds: CLIP-L while off the device, the streamer's host store."""
        clip = [p for p in self.encoder.clip.parameters() if p.device.type == "cpu"]
        return clip + self.streamer.host_tensors()

    def _comfy_cache_tensors(self):
        """Sizes this handle for ComfyUI's RAM-pressure cache (0.38), which counts an output's tensors."""
        return self.host_tensors()

    def close(self) -> None:
        """Free everything: CLIP-L leaves the device, the streamer its buffers, the files their handles."""
        self.release_device()
        self.streamer.detach()
        for s in self.sources:
            s.close()


def file_identity(path: str) -> tuple:
    st = os.stat(path)
    return (os.path.abspath(path), st.st_size, st.st_mtime_ns)


# llama.cpp's names (a LLaVA-Llama-3 GGUF, as ComfyUI-GGUF's CLIP loader reads it) → Hugging Face's
LLAMA_CPP_NAMES = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
                   "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                   "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}
LLAMA_CPP_IGNORED = ("output.weight", "output_norm.weight", "rope_freqs.weight")
HEAD_DIM = 128


def _llama_cpp_recipes(source: TensorSource) -> tuple[str, dict[str, Recipe], list[str]]:
    """blk.N.attn_q.weight → layers.N.self_attn.q_proj.weight, token_embd → embed_tokens; q and k get
    llama.cpp's RoPE row permutation undone (heads from the rows: head dim 128)."""
    recipes, unexpected = {}, []
    for k in source.keys():
        m = re.match(r"blk\.(\d+)\.(\w+)\.(weight|bias)$", k)
        if k == "token_embd.weight":
            recipes["embed_tokens.weight"] = Recipe((k,))
        elif m and m.group(2) in LLAMA_CPP_NAMES:
            heads = source.info(k).shape[0] // HEAD_DIM if m.group(2) in ("attn_q", "attn_k") else 0
            recipes[f"layers.{m.group(1)}.{LLAMA_CPP_NAMES[m.group(2)]}.{m.group(3)}"] = Recipe((k,), unpermute_heads=heads)
        elif k not in LLAMA_CPP_IGNORED:
            unexpected.append(k)
    return "", recipes, unexpected


def _llama_recipes(source: TensorSource) -> tuple[str, dict[str, Recipe], list[str]]:
    keys = source.keys()
    if "blk.0.attn_q.weight" in keys and "token_embd.weight" in keys:
        return _llama_cpp_recipes(source)
    prefix = key_prefix(keys, LLAMA_ANCHOR)
    if prefix is None or key_prefix(keys, CLIP_ANCHOR) is not None:  # CLIP's layers also end in self_attn.q_proj
        raise WrongModelError("a LLaVA-Llama-3 text encoder (HF Llama names)",
                              f"{describe_model(keys)} in {source.describe}",
                              "pick llava_llama3_fp16.safetensors (or _fp8_scaled) from models/text_encoders")
    recipes, unexpected = {}, []
    for k in keys:
        if k.startswith(prefix):
            local = k[len(prefix):]
            if not local.endswith(".scale_input") and local not in ("norm.weight", "rotary_emb.inv_freq", "scaled_fp8"):
                recipes[local] = Recipe((k,))
        elif not k.startswith(LLAVA_EXTRAS):
            unexpected.append(k)
    return prefix, recipes, unexpected


def _load_llama(path: str, device: torch.device, prefetch: int, vram_budget_gb: float | None, host_tier: str,
                reserve_bytes: int, hand_over: HostHandOver | None):
    source = open_checkpoint(path, subfolders=("text_encoder",))
    try:
        prefix, recipes, unexpected = _llama_recipes(source)
        metas = {n: recipe_meta(source, r, n) for n, r in recipes.items()}
        config = infer_llama_config({n: m.shape for n, m in metas.items()}, source.describe)
        used = config.num_hidden_layers
        recipes = {n: r for n, r in recipes.items()
                   if not ((m := re.match(r"layers\.(\d+)\.", n)) and int(m.group(1)) >= used)}
        metas = {n: metas[n] for n in recipes}
        llama = LlamaStates(config, device)
        expected = {f"layers.{i}.{n}": tuple(p.shape) for i, layer in enumerate(llama.layers)
                    for n, p in layer.named_parameters()}
        expected["embed_tokens.weight"] = (config.vocab_size, config.hidden_size)
        layer_scales = {f"layers.{i}.{n}" for i, layer in enumerate(llama.layers)
                        for n in scale_names(layer, [k[len(f"layers.{i}."):] for k in metas if k.startswith(f"layers.{i}.")])}
        check_tensors(expected, metas, optional=layer_scales, unused=unexpected, describe=source.describe,
                      what="the LLaVA-Llama-3 text encoder")
        check_fp8_scales(metas, marker=any(k.endswith("scaled_fp8") for k in source.keys()),
                         describe=source.describe, what="the LLaVA-Llama-3 text encoder")

        file_dtype = dominant_float_dtype(m.dtype for n, m in metas.items() if n.startswith("layers."))
        if any(m.quant for m in metas.values()):
            file_dtype = torch.float16  # GGUF quants compute like the fp16 model they came from
        dtype = compute_dtype("auto", file_dtype, device)

        def block_of(name):
            m = re.match(r"layers\.(\d+)\.(.+)", name)
            return (int(m.group(1)), m.group(2)) if m else None

        blocks, fixed = block_sources(source, recipes, metas, used, block_of, lambda n, meta, b: meta.dtype)
        mark_quantised(llama.layers, blocks, metas, block_of)
        embed_name = recipes["embed_tokens.weight"].parts[0]
        settings = StreamSettings(
            prefetch=prefetch, host_tier=host_tier, what="the LLaVA text encoder", reserve_bytes=reserve_bytes,
            budget_bytes=None if vram_budget_gb is None else int(vram_budget_gb * 1024 ** 3), hand_over=hand_over)
        streamer = BlockStreamer(llama, llama.layers, PackedSource(blocks), device, settings)
        return llama, streamer, (lambda ids: source.read_rows(embed_name, ids)), dtype, source, fixed
    except BaseException:
        source.close()
        raise


def _load_clip(path: str, device: torch.device, tokenizer) -> tuple[ClipPooled, TensorSource]:
    source = open_checkpoint(path, subfolders=("text_encoder_2",))
    try:
        keys = source.keys()
        prefix = key_prefix(keys, CLIP_ANCHOR)
        if prefix is None:
            raise WrongModelError("a CLIP-L text encoder (HF CLIPTextModel names)",
                                  f"{describe_model(keys)} in {source.describe}",
                                  "pick clip_l.safetensors from models/text_encoders (or models/clip)")
        local = {k[len(prefix):]: k for k in keys if k.startswith(prefix) and not k[len(prefix):].endswith(CLIP_IGNORED)}
        scales = {n: k for n, k in local.items() if n.endswith(FP8_EXTRAS)}  # scaled fp8: read with their weights
        local = {n: k for n, k in local.items() if n not in scales}
        outside = [k for k in keys if not k.startswith(prefix) and k not in CLIP_IGNORED]
        metas = {n: source.info(k) for n, k in local.items()}
        config = infer_clip_config({n: m.shape for n, m in metas.items()}, source.describe,
                                   eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
                                   pad_token_id=tokenizer.pad_token_id)
        clip = ClipPooled(config)
        model_keys = [k for k in clip.expected_keys() if not k.endswith("position_ids")]
        lead = "text_model." if model_keys and model_keys[0].startswith("text_model.") else ""
        shapes = dict(clip.model.state_dict())
        check_tensors({k: tuple(shapes[k].shape) for k in model_keys}, {lead + n: m for n, m in metas.items()},
                      unused=outside, describe=source.describe, what="CLIP-L")
        check_fp8_scales(metas | {n: source.info(k) for n, k in scales.items()},
                         marker=any(k.endswith("scaled_fp8") for k in keys), describe=source.describe, what="CLIP-L")
        dtype = compute_dtype("auto", dominant_float_dtype(m.dtype for m in metas.values()), device)
        clip.load({lead + n: _dequantised(source, k) for n, k in local.items()}, device, dtype)
        return clip, source
    except BaseException:
        source.close()
        raise


def _dequantised(source: TensorSource, key: str) -> torch.Tensor:
    t = source.read(key)
    scale_key = key[: -len("weight")] + "scale_weight" if key.endswith(".weight") else None
    if scale_key and scale_key in source:
        t = t.float() * source.read(scale_key).float()
    return t


def load_text_encoder(llm_path: str, clip_path: str, device: str | torch.device = "cpu", *,
                      tokenizer_dir: str | None = None, host_tokenizer_dirs: dict[str, str] | None = None,
                      prefetch_blocks: int = 1, vram_budget_gb: float | None = 0, host_tier: str = "mapped",
                      reserve_bytes: int = 0, hand_over: HostHandOver | None = None) -> LoadedTextEncoder:
    """Both encoders and their tokenizers, ready to `encode(prompt)`.

    host_tokenizer_dirs: {"llama": dir, "clip": dir} bundled with the host (the node layer fills it).
    host_tier: "mapped" by default: the encoder runs once per prompt, so its layers are read from the
    file through the page cache instead of pinning 16 GB next to the DiT.
    reserve_bytes: device memory an automatic budget leaves to other programs (the CLI's --reserve-vram).
    hand_over: a host sharing the device (nodes/host.py share_device): its free memory and make_room.
    """
    device = torch.device(device)
    host = host_tokenizer_dirs or {}
    llama_tok = load_llama_tokenizer(find_tokenizer(LLAMA, llm_path, tokenizer_dir or None,
                                                    [host.get("llama")] if host.get("llama") else []))
    clip_tok = load_clip_tokenizer(find_tokenizer(CLIP, clip_path, tokenizer_dir or None,
                                                  [host.get("clip")] if host.get("clip") else []))
    llama, streamer, rows, dtype, llm_source, fixed = _load_llama(llm_path, device, prefetch_blocks, vram_budget_gb,
                                                                  host_tier, reserve_bytes, hand_over)
    if set(fixed) != {"embed_tokens.weight"}:
        llm_source.close()
        raise StateDictError("only the embedding table outside the decoder layers",
                             f"also {list_some(sorted(set(fixed) - {'embed_tokens.weight'}))}", "use an official file")
    try:
        clip, clip_source = _load_clip(clip_path, device, clip_tok)
    except BaseException:
        streamer.detach()
        llm_source.close()
        raise
    identity = (file_identity(_first_file(llm_source)), file_identity(_first_file(clip_source)), str(device), str(dtype))
    encoder = HunyuanTextEncoder(llama, rows, clip, llama_tok, clip_tok, device, dtype, identity)
    return LoadedTextEncoder(encoder, streamer, llm_path, clip_path, [llm_source, clip_source])


def _first_file(source: TensorSource) -> str:
    files = getattr(source, "files", None)
    return files[0].path if files else source.describe
