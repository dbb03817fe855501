"""HunyuanVideo 1.0 as the engine sees it: its files, latent format, sampler, constants and memory model."""

from __future__ import annotations

from typing import ClassVar

from ...loaders.key_check import key_prefix
from ..base import Family, LatentFormat, SamplerDefaults
from . import image_condition as i2v
from .caches import CACHE_CONSTANTS
from .dit_spec import DIT_SPEC
from .text_loader import CLIP_TOKENIZER, LLAMA3_TOKENIZER
from .vae import SCALING_FACTOR

# Key fragments that say a checkpoint is a HunyuanVideo-lineage DiT (any layout): the token refiner
DIT_MARKS = ("txt_in.individual_token_refiner.", "context_embedder.token_refiner.")
VAE_ANCHOR = "decoder.conv_in.conv.weight"


class HunyuanVideo(Family):
    name = "hunyuan_video"
    title = "HunyuanVideo 1.0"
    latent = LatentFormat(channels=16, space=8, time=4, scaling=SCALING_FACTOR, side_multiple=16, preview="HunyuanVideo")
    caches = CACHE_CONSTANTS
    defaults = SamplerDefaults(steps=30, flow_shift=7.0, embedded_guidance=6.0, cfg=1.0)
    files: ClassVar[dict[str, str]] = {
        "dit": "hunyuan_video_t2v_720p_bf16.safetensors (or _image_to_video_, a kijai fp8, a city96 GGUF such "
               "as hunyuan-video-t2v-720p-Q4_K_M.gguf)",
        "llm": "LLaVA-Llama-3: llava_llama3_fp8_scaled.safetensors, llava_llama3_fp16.safetensors or a llama.cpp GGUF",
        "second_text": "CLIP-L: clip_l.safetensors",
        "vae": "hunyuan_video_vae_bf16.safetensors",
        "vision": "LLaVA's vision tower: llava_llama3_vision.safetensors (HunyuanVideo-I2V prompts)"}
    tokenizers = (LLAMA3_TOKENIZER, CLIP_TOKENIZER)

    # -- files -----------------------------------------------------------------------------------------
    def claims_dit(self, keys: set[str]) -> bool:
        return any(m in k for k in keys for m in DIT_MARKS) or any(k.endswith("img_in.proj.weight") for k in keys)

    def dit_spec(self, keys: set[str]):
        return DIT_SPEC

    def claims_text_encoder(self, keys: set[str]) -> bool:
        """LLaVA-Llama-3: Llama-architecture layers without q/k/v biases (Qwen2.5 has them)."""
        if "blk.0.attn_q.weight" in keys:
            return "blk.0.attn_q.bias" not in keys
        prefix = key_prefix(keys, "layers.0.self_attn.q_proj.weight")
        return prefix is not None and prefix + "layers.0.self_attn.q_proj.bias" not in keys

    def load_text_encoder(self, first: str, second: str, device, **options):
        from .text_loader import load_text_encoder

        return load_text_encoder(first, second, device, **options)

    def claims_vae(self, keys: set[str], shapes) -> bool:
        anchors = [k for k in keys if k.endswith(VAE_ANCHOR)]
        # a post_quant_conv is 1.0's structure whatever the channels: its loader names an unknown variant
        return bool(anchors) and (shapes(min(anchors, key=len))[1] == self.latent.channels or
                                  any("post_quant_conv." in k for k in keys))

    def load_vae(self, source, path: str, device, dtype=None):
        from .vae_loader import load_vae

        return load_vae(source, path, self, device, dtype)

    # -- sampling --------------------------------------------------------------------------------------
    def denoiser(self, dit, positive, negative, latent, settings):
        from .sampler import HunyuanDenoiser

        return HunyuanDenoiser(dit, positive, negative, latent, settings)

    def sampler_preset(self, dit_name: str, dit_cfg):
        if getattr(dit_cfg, "framepack", False):  # FramePack's demo: 25 steps, distilled guidance 10, no CFG
            return "FramePack", SamplerDefaults(steps=25, flow_shift=self.defaults.flow_shift, embedded_guidance=10.0,
                                                cfg=1.0)
        return super().sampler_preset(dit_name, dit_cfg)

    def samples_sections(self, dit_cfg) -> bool:
        return bool(getattr(dit_cfg, "framepack", False))

    def section_sampler(self, dit):
        if not dit.model.cfg.framepack:
            return super().section_sampler(dit)
        from .framepack import SECTIONS

        return SECTIONS

    def dropped_frames(self, dit) -> int:
        return i2v.DROPPED_FRAMES if dit.model.cfg.image_condition == "latent_concat" else 0

    def attach_start_image(self, conditioning, image_latent, frames: int, vision_states=None):
        from .conditioning import with_start_image

        return with_start_image(conditioning, image_latent, frames)

    def image_prompt(self, dit_cfg, text_encoder_path: str, vision_path: str | None, interleave: int):
        """HunyuanVideo-I2V (33 channels, or 16 with a start image: token replace) conditions on LLaVA's view
        of the image; SkyReels-I2V (32 channels) on text only."""
        from ...errors import InputError
        from .vision_loader import has_vision_tower

        if dit_cfg.framepack:  # its start image enters as a latent and SigLIP states, not in the prompt
            return None, 0
        variant = dit_cfg.image_condition or "token_replace"
        if variant == "concat":
            return None, 0
        vision = vision_path or (text_encoder_path if has_vision_tower(text_encoder_path) else None)
        if vision is None:
            raise InputError("LLaVA's vision tower for a HunyuanVideo-I2V prompt",
                             f"none in {text_encoder_path} and no --vision",
                             "pass --vision llava_llama3_vision.safetensors (ComfyUI's models/clip_vision) or a full "
                             "LLaVA folder as --llm")
        return vision, interleave or i2v.IMAGE_INTERLEAVE[variant]

    # -- memory, demo -------------------------------------------------------------------------------------
    def memory(self):
        from .planning import MEMORY

        return MEMORY

    def write_demo_models(self, root: str) -> dict[str, str]:
        from .demo import build_models

        return build_models(root)

    def smoke_model(self, folder: str, width: int, height: int, seed: int):
        import torch

        from .demo import TINY_DIT, write_comfy_dit

        g = torch.Generator().manual_seed(seed)
        cfg = TINY_DIT
        inputs = {"x": torch.randn(1, cfg.in_channels, 2, height // 8, width // 8, generator=g),
                  "timestep": torch.tensor([900.0]), "txt": torch.randn(1, 24, cfg.text_dim, generator=g),
                  "txt_mask": (torch.arange(24) < 17).long()[None],
                  "pooled": torch.randn(1, cfg.pooled_dim, generator=g), "guidance": torch.tensor([6000.0])}
        return write_comfy_dit(folder), inputs
