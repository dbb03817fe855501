"""Load HunyuanVideo 1.5's text encoders from the files users have.

Qwen2.5-VL-7B's language model: Comfy-Org `qwen_2.5_vl_7b.safetensors` / `_fp8_scaled` (HF names under
`model.`, fp8 × `scale_weight`; the vision tower `visual.*` and `lm_head.weight` are not read), a diffusers
`text_encoder/` folder (Qwen2_5_VLTextModel names, no prefix), a full Qwen2.5-VL-7B-Instruct folder as
Tencent's download holds it (`model.*` + `visual.*` as transformers 4.x and 5.x save it, or
`model.language_model.*` + `model.visual.*`), a llama.cpp `qwen2vl` GGUF. Only layers 0…N−3 are read; they
stream through `offload/`; the embedding table stays in the file and only the looked-up rows are read.

ByT5 (Glyph-SDXL-v2's byt5-small): Comfy-Org `byt5_small_glyphxl_fp16.safetensors` (`shared.weight` +
`encoder.*`) or a diffusers `text_encoder_2/` folder (T5EncoderModel). Small (~220M), so it is loaded whole.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from ...errors import StateDictError, UnsupportedVariantError, WrongModelError, list_some
from ...loaders.checkpoint import open_checkpoint
from ...loaders.decoder_layers import ANCHOR, CLIP_ANCHOR, DecoderLayersSpec, is_llama_cpp
from ...loaders.dtypes import compute_dtype, dominant_float_dtype
from ...loaders.key_check import check_fp8_scales, check_tensors, key_prefix
from ...loaders.model_kind import describe_model
from ...loaders.streamed import StreamOptions, load_streamed
from ...loaders.tensor_source import TensorSource
from ...models.llama_encoder import DecoderFacts
from ...numerics import check_finite
from ...offload.settings import HostHandOver
from ...offload.streamer import BlockStreamer
from ..base import TextStack
from .conditioning import to_conditioning
from .prompt import BYT5_TOKENIZER, QWEN25_TOKENIZER, load_tokenizer
from .text import ByT5Glyph, Hunyuan15TextEncoder, infer_byt5_config

QWEN_FILES = "qwen_2.5_vl_7b_fp8_scaled.safetensors (or qwen_2.5_vl_7b.safetensors) from models/text_encoders"
BYT5_FILES = "byt5_small_glyphxl_fp16.safetensors from models/text_encoders"
QWEN25 = DecoderFacts("Qwen2.5-VL", f"{QWEN_FILES}, or the Qwen2.5-VL-7B-Instruct folder", head_dim=128,
                      rope_theta=1e6, rms_eps=1e-6, skip_last_layers=2, architecture="qwen2", fp16_ok=False,
                      depth_by_width=((3584, 28),))
QWEN_SPEC = DecoderLayersSpec(QWEN25, extras=("visual.", "model.visual.", "lm_head.", "scaled_fp8"))
BYT5_ANCHOR = "encoder.block.0.layer.0.SelfAttention.q.weight"
BYT5_MAX_VOCAB = 4096  # bytes + specials + Glyph-SDXL's colour/font tokens (1510); a word-piece T5 has 32k+
IGNORED = ("scaled_fp8", ".scale_input")


@dataclass
class LoadedTextEncoder(TextStack):
    empty_prompt_ok = True  # the reference's default negative prompt is ""
    encoder: Hunyuan15TextEncoder
    streamer: BlockStreamer
    qwen_path: str
    byt5_path: str
    sources: list[TensorSource] = field(repr=False, default_factory=list)

    def encode(self, prompt: str, use_cache: bool = True):
        return self.encoder.encode(prompt, use_cache)

    def conditioning(self, prompt: str) -> list:
        """The prompt as ComfyUI's native HunyuanVideo 1.5 CONDITIONING (cached per prompt and files)."""
        embeds = self.encode(prompt)
        check_finite(embeds.states, "the Qwen2.5-VL prompt states")
        if embeds.glyph is not None:
            check_finite(embeds.glyph, "the ByT5 glyph states of the quoted text")
        return to_conditioning(embeds)

    def device_bytes(self) -> int:
        """What a stage holds on the device besides the streamed layers (ByT5)."""
        return sum(p.numel() * p.element_size() for p in self.encoder.byt5.parameters())

    @property
    def stats(self):
        return self.streamer.stats

    def to_device(self) -> None:
        self.encoder.byt5.to(self.encoder.device)

    def release_device(self) -> None:
        """Nothing on the compute device between prompts: ByT5 goes to the host, no layer stays."""
        self.streamer.set_resident(())
        if self.encoder.device.type != "cpu":
            self.encoder.byt5.to("cpu")

    def host_tensors(self) -> list[torch.Tensor]:
        """The host RAM this encoder holds: ByT5 while off the device, the streamer's host store."""
        byt5 = [p for p in self.encoder.byt5.parameters() if p.device.type == "cpu"]
        return byt5 + self.streamer.host_tensors()

    def _comfy_cache_tensors(self):
        """Sizes this handle for ComfyUI's RAM-pressure cache (0.38), which counts an output's tensors."""
        return self.host_tensors()

    def close(self) -> None:
        """Free everything: ByT5 leaves the device, the streamer its buffers, the files their handles."""
        self.release_device()
        self.streamer.detach()
        for s in self.sources:
            s.close()


def claims_text_encoder(keys) -> bool:
    """A Qwen2.5 language model: Llama-architecture names (gated MLP) with q_proj biases, or llama.cpp names
    with `attn_q.bias` (LLaVA-Llama-3 has no biases; CLIP and SigLIP have no gate_proj)."""
    keys = set(keys)
    if is_llama_cpp(keys):
        return "blk.0.attn_q.bias" in keys
    prefix = key_prefix(keys, ANCHOR)
    return prefix is not None and {prefix + "layers.0.self_attn.q_proj.bias", prefix + "layers.0.mlp.gate_proj.weight"} <= keys


def _refuse_other_families(source: TensorSource) -> None:
    """LLaVA-Llama-3 is a valid Llama-architecture file the layer spec would read: say whose it is."""
    keys = set(source.keys())
    llava = getattr(source, "arch", None) == "llama" or (is_llama_cpp(keys) and "blk.0.attn_q.bias" not in keys)
    prefix = key_prefix(keys, ANCHOR)
    llava = llava or (prefix is not None and prefix + "layers.0.mlp.gate_proj.weight" in keys
                      and prefix + "layers.0.self_attn.q_proj.bias" not in keys)
    if llava:
        raise WrongModelError("HunyuanVideo 1.5's text encoder, the Qwen2.5-VL language model (q/k/v biases)",
                              f"HunyuanVideo 1.0's text encoder: LLaVA-Llama-3 (a Llama without q/k/v biases) in "
                              f"{source.describe}", f"pick {QWEN_FILES}; LLaVA-Llama-3 goes with a HunyuanVideo "
                              "1.0 DiT")


def _load_qwen(source: TensorSource, device: torch.device, options: StreamOptions):
    s = load_streamed(source, QWEN_SPEC, device, options)
    if set(s.fixed) != {"embed_tokens.weight"}:
        s.streamer.detach()
        raise StateDictError("only the embedding table outside the decoder layers",
                             f"also {list_some(sorted(set(s.fixed) - {'embed_tokens.weight'}))} in {source.describe}",
                             "use an official file")
    embed_name = s.fixed["embed_tokens.weight"][0].parts[0]
    return s.model, s.streamer, (lambda ids: source.read_rows(embed_name, ids)), s.compute_dtype


def _not_byt5(source: TensorSource, keys) -> WrongModelError:
    if key_prefix(keys, CLIP_ANCHOR) is not None:
        what = "CLIP-L (HunyuanVideo 1.0's second text encoder)"
    elif claims_text_encoder(keys):
        what = "the Qwen2.5-VL language model (the first text encoder)"
    else:
        what = describe_model(keys)
    return WrongModelError("the ByT5 glyph encoder (T5 encoder names: shared.weight, encoder.block.N…)",
                           f"{what} in {source.describe}", f"pick {BYT5_FILES}")


def _load_byt5(path: str, device: torch.device) -> tuple[ByT5Glyph, torch.dtype, TensorSource]:
    source = open_checkpoint(path, subfolders=("text_encoder_2",))
    try:
        keys = source.keys()
        prefix = key_prefix(keys, BYT5_ANCHOR)
        if prefix is None:
            raise _not_byt5(source, keys)
        local = {k[len(prefix):]: k for k in keys if k.startswith(prefix) and not k.endswith(IGNORED)}
        if "shared.weight" not in local and "encoder.embed_tokens.weight" in local:
            local["shared.weight"] = local["encoder.embed_tokens.weight"]
        local.pop("encoder.embed_tokens.weight", None)  # the shared table, tied
        scales = {n: k for n, k in local.items() if n.endswith(".scale_weight")}  # scaled fp8: read with their weights
        local = {n: k for n, k in local.items() if n not in scales}
        outside = [k for k in keys if not k.startswith(prefix) and not k.endswith(IGNORED)]
        metas = {n: source.info(k) for n, k in local.items()}
        config = infer_byt5_config({n: m.shape for n, m in metas.items()}, source.describe)
        if config.vocab_size > BYT5_MAX_VOCAB:
            raise UnsupportedVariantError("a byte-level T5 encoder (ByT5: 384 byte tokens + Glyph-SDXL's colour and "
                                          "font tokens)", f"a T5 with a {config.vocab_size}-token vocabulary in "
                                          f"{source.describe}", f"pick {BYT5_FILES}")
        byt5 = ByT5Glyph(config)
        check_tensors(byt5.expected(), metas, unused=outside, describe=source.describe, what="the ByT5 glyph encoder")
        check_fp8_scales(metas | {n: source.info(k) for n, k in scales.items()},
                         marker=any(k.endswith("scaled_fp8") for k in keys), describe=source.describe, what="ByT5")
        # T5 overflows fp16 (its activations grow through the blocks): bf16 or fp32
        dtype = compute_dtype("auto", dominant_float_dtype(m.dtype for m in metas.values()), device, fp16_ok=False)
        byt5.load({n: _dequantised(source, k) for n, k in local.items()}, device, dtype)
        return byt5, dtype, source
    except BaseException:
        source.close()
        raise


def _dequantised(source: TensorSource, key: str) -> torch.Tensor:
    t = source.read(key)
    scale_key = key[: -len("weight")] + "scale_weight" if key.endswith(".weight") else None
    if scale_key and scale_key in source:
        t = t.float() * source.read(scale_key).float()
    return t


def load_text_encoder(qwen_path: str, byt5_path: str, device: str | torch.device = "cpu", *,
                      tokenizer_dir: str | None = None, host_tokenizer_dirs: dict[str, str] | None = None,
                      prefetch_blocks: int = 1, vram_budget_gb: float | None = 0, host_tier: str = "mapped",
                      reserve_bytes: int = 0, hand_over: HostHandOver | None = None) -> LoadedTextEncoder:
    """Both encoders and their tokenizers, ready to `encode(prompt)` / `conditioning(prompt)`.

    host_tokenizer_dirs: {"qwen25": dir, "byt5": dir} bundled with the host (the node layer fills it).
    host_tier: "mapped" by default: the encoder runs once per prompt, so its layers are read from the file
    through the page cache instead of pinning 15 GB next to the DiT. reserve_bytes, hand_over: as the DiT's.
    """
    device = torch.device(device)
    host = host_tokenizer_dirs or {}
    qwen_source = open_checkpoint(qwen_path, subfolders=("text_encoder",))
    sources, streamer = [qwen_source], None
    try:
        _refuse_other_families(qwen_source)
        options = StreamOptions(prefetch=prefetch_blocks, vram_budget_gb=vram_budget_gb, host_tier=host_tier,
                                reserve_bytes=reserve_bytes, hand_over=hand_over)
        qwen, streamer, rows, dtype = _load_qwen(qwen_source, device, options)
        byt5, byt5_dtype, byt5_source = _load_byt5(byt5_path, device)  # a wrong file is named before a tokenizer
        sources.append(byt5_source)
        qwen_tok = load_tokenizer(QWEN25_TOKENIZER, qwen_path, tokenizer_dir or None, host.get(QWEN25_TOKENIZER.key))
        byt5_tok = load_tokenizer(BYT5_TOKENIZER, byt5_path, tokenizer_dir or None, host.get(BYT5_TOKENIZER.key))
    except BaseException:
        if streamer is not None:
            streamer.detach()
        for s in sources:
            s.close()
        raise
    identity = (file_identity(_first_file(qwen_source)), file_identity(_first_file(byt5_source)), str(device),
                str(dtype), str(byt5_dtype))
    encoder = Hunyuan15TextEncoder(qwen, rows, byt5, qwen_tok, byt5_tok, device, dtype, byt5_dtype, identity)
    return LoadedTextEncoder(encoder, streamer, qwen_path, byt5_path, sources)


def file_identity(path: str) -> tuple:
    st = os.stat(path)
    return (os.path.abspath(path), st.st_size, st.st_mtime_ns)


def _first_file(source: TensorSource) -> str:
    files = getattr(source, "files", None)
    if files:
        return files[0].path
    return getattr(source, "path", source.describe)
