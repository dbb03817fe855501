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
from dataclasses import dataclass, field

import torch

from ...errors import StateDictError, WrongModelError, list_some
from ...loaders.checkpoint import open_checkpoint
from ...loaders.decoder_layers import DecoderLayersSpec
from ...loaders.dtypes import compute_dtype, dominant_float_dtype
from ...loaders.key_check import check_fp8_scales, check_tensors, key_prefix
from ...loaders.model_kind import describe_model
from ...loaders.streamed import StreamOptions, load_streamed
from ...loaders.tensor_source import TensorSource
from ...loaders.tokenizer_files import TokenizerKind, find_tokenizer, load_clip_tokenizer, load_fast_tokenizer
from ...models.clip_encoder import ClipPooled, infer_clip_config
from ...models.llama_encoder import DecoderFacts
from ...numerics import check_finite
from ...offload.settings import HostHandOver
from ...offload.streamer import BlockStreamer
from ..base import TextStack
from .conditioning import to_conditioning
from .text import HunyuanTextEncoder

LLAVA_EXTRAS = ("vision_tower.", "multi_modal_projector.", "lm_head.", "language_model.lm_head.", "image_newline",
                "model.vision_tower.", "model.multi_modal_projector.", "scaled_fp8")
CLIP_ANCHOR = "embeddings.token_embedding.weight"
CLIP_IGNORED = ("text_projection.weight", "logit_scale", "embeddings.position_ids", "scaled_fp8", ".scale_input")
FP8_EXTRAS = (".scale_weight",)


@dataclass
class LoadedTextEncoder(TextStack):
    encoder: HunyuanTextEncoder
    streamer: BlockStreamer
    llm_path: str
    clip_path: str
    sources: list[TensorSource] = field(repr=False, default_factory=list)

    def encode(self, prompt: str, use_cache: bool = True):
        return self.encoder.encode(prompt, use_cache)

    def encode_with_image(self, prompt: str, image_features: torch.Tensor, interleave: int):
        return self.encoder.encode_with_image(prompt, image_features, interleave)

    def conditioning(self, prompt: str) -> list:
        """The prompt as ComfyUI's native HunyuanVideo CONDITIONING (cached per prompt and files)."""
        embeds = self.encode(prompt)
        check_finite(embeds.states, "the LLaVA-Llama-3 prompt states")
        check_finite(embeds.pooled, "the CLIP-L pooled prompt vector")
        return to_conditioning(embeds)

    def image_conditioning(self, vision_path: str, image, prompt: str, interleave: int = 2) -> list:
        """HunyuanVideo-I2V's prompt with the start image's tokens (LLaVA's vision tower from `vision_path`)."""
        from .image_prompt import image_conditioning

        return image_conditioning(self, vision_path, image, prompt, interleave)

    def device_bytes(self) -> int:
        """What a stage holds on the device besides the streamed layers (CLIP-L)."""
        return self.clip_bytes()

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


LLAMA3_TOKENIZER = TokenizerKind("llama", "Llama-3", ("tokenizer.json",), ("tokenizer",), "comfy/text_encoders/llama_tokenizer")
CLIP_TOKENIZER = TokenizerKind("clip", "CLIP-L", ("vocab.json", "merges.txt"), ("tokenizer_2", "tokenizer"), "comfy/sd1_tokenizer")
LLAVA = DecoderFacts("LLaVA-Llama-3", "llava_llama3_fp16.safetensors (or _fp8_scaled) from models/text_encoders, or "
                     "the xtuner LLaVA-Llama-3 folder", head_dim=128, rope_theta=500000.0, rms_eps=1e-5,
                     skip_last_layers=2)
LLAVA_SPEC = DecoderLayersSpec(LLAVA, extras=LLAVA_EXTRAS)


def _load_llama(path: str, device: torch.device, options: StreamOptions):
    source = open_checkpoint(path, subfolders=("text_encoder",))
    try:
        s = load_streamed(source, LLAVA_SPEC, device, options)
        if set(s.fixed) != {"embed_tokens.weight"}:
            raise StateDictError("only the embedding table outside the decoder layers",
                                 f"also {list_some(sorted(set(s.fixed) - {'embed_tokens.weight'}))}",
                                 "use an official file")
        embed_name = s.fixed["embed_tokens.weight"][0].parts[0]
        return s.model, s.streamer, (lambda ids: source.read_rows(embed_name, ids)), s.compute_dtype, source
    except BaseException:
        source.close()
        raise


def _clip_prefix(source: TensorSource) -> str:
    keys = source.keys()
    prefix = key_prefix(keys, CLIP_ANCHOR)
    if prefix is None:
        raise WrongModelError("a CLIP-L text encoder (HF CLIPTextModel names)", f"{describe_model(keys)} in {source.describe}",
                              "pick clip_l.safetensors from models/text_encoders (or models/clip)")
    return prefix


def _refuse_other_clip_files(path: str) -> None:
    """A wrong second file is named before its tokenizer is looked for (headers only)."""
    source = open_checkpoint(path, subfolders=("text_encoder_2",))
    try:
        _clip_prefix(source)
    finally:
        source.close()


def _load_clip(path: str, device: torch.device, tokenizer) -> tuple[ClipPooled, TensorSource]:
    source = open_checkpoint(path, subfolders=("text_encoder_2",))
    try:
        keys = source.keys()
        prefix = _clip_prefix(source)
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
    _refuse_other_clip_files(clip_path)
    llama_tok = load_fast_tokenizer(find_tokenizer(LLAMA3_TOKENIZER, llm_path, tokenizer_dir or None,
                                                    [host.get("llama")] if host.get("llama") else []), "Llama-3")
    clip_tok = load_clip_tokenizer(find_tokenizer(CLIP_TOKENIZER, clip_path, tokenizer_dir or None,
                                                  [host.get("clip")] if host.get("clip") else []))
    options = StreamOptions(prefetch=prefetch_blocks, vram_budget_gb=vram_budget_gb, host_tier=host_tier,
                            reserve_bytes=reserve_bytes, hand_over=hand_over)
    llama, streamer, rows, dtype, llm_source = _load_llama(llm_path, device, options)
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
