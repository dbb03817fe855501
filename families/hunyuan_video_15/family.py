"""HunyuanVideo 1.5 as the engine sees it: its files, latent format, sampler, constants and memory model."""

from __future__ import annotations

from typing import ClassVar

from ..base import Family, LatentFormat, SamplerDefaults
from .caches import CACHE_CONSTANTS
from .dit_spec import DIT_SPEC
from .prompt import BYT5_TOKENIZER, QWEN25_TOKENIZER

SCALING_FACTOR = 1.03682  # the VAE's latent scaling (no shift), a fact the weights do not tell
DIT_MARKS = ("vision_in.proj.0.weight", "image_embedder.norm_in.weight")  # the SigLIP projection: 1.5 only


class HunyuanVideo15(Family):
    name = "hunyuan_video_15"
    title = "HunyuanVideo 1.5"
    latent = LatentFormat(channels=32, space=16, time=4, scaling=SCALING_FACTOR, side_multiple=16,
                          preview="HunyuanVideo15")
    caches = CACHE_CONSTANTS
    tokenizers = (QWEN25_TOKENIZER, BYT5_TOKENIZER)
    defaults = SamplerDefaults(steps=50, flow_shift=5.0, embedded_guidance=None, cfg=6.0)  # 480p T2V
    files: ClassVar[dict[str, str]] = {"dit": "hunyuanvideo1.5_720p_t2v_fp16.safetensors (480p/720p, t2v/i2v, cfg- or step-distilled, "
                    "fp16 or fp8_scaled, or a GGUF)",
             "llm": "Qwen2.5-VL: qwen_2.5_vl_7b_fp8_scaled.safetensors or qwen_2.5_vl_7b.safetensors",
             "second_text": "ByT5: byt5_small_glyphxl_fp16.safetensors",
             "vae": "hunyuanvideo15_vae_fp16.safetensors",
             "vision": "SigLIP: sigclip_vision_patch14_384.safetensors (image-to-video)"}

    # -- files -----------------------------------------------------------------------------------------
    def claims_dit(self, keys: set[str]) -> bool:
        return any(k.endswith(DIT_MARKS) for k in keys)

    def dit_spec(self, keys: set[str]):
        return DIT_SPEC

    def claims_text_encoder(self, keys: set[str]) -> bool:
        from .text_loader import claims_text_encoder

        return claims_text_encoder(keys)

    def load_text_encoder(self, first: str, second: str, device, **options):
        from .text_loader import load_text_encoder

        return load_text_encoder(first, second, device, **options)

    def claims_vae(self, keys: set[str], shapes) -> bool:
        from .vae_loader import claims_vae

        return claims_vae(keys, shapes)

    def load_vae(self, source, path: str, device, dtype=None):
        from .vae_loader import load_vae

        return load_vae(source, path, self, device, dtype)

    default_negative = ""  # the reference pipelines encode an empty negative prompt for their cfg 6

    # -- sampling --------------------------------------------------------------------------------------
    def sampler_preset(self, dit_name: str, dit_cfg):
        from .presets import preset

        return preset(dit_name, bool(getattr(dit_cfg, "meanflow", False)))

    def denoiser(self, dit, positive, negative, latent, settings):
        from .sampler import Hunyuan15Denoiser

        return Hunyuan15Denoiser(dit, positive, negative, latent, settings)

    def attach_start_image(self, conditioning, image_latent, frames: int, vision_states=None):
        from .conditioning import with_start_image

        return with_start_image(conditioning, image_latent, frames, vision_states)

    def fit_start_image(self, image, width: int, height: int):
        from ...models.siglip import fit_to_video  # diffusers' resize-and-crop (Lanczos), as the reference pipeline

        return fit_to_video(image, width, height)

    def start_image_states(self, vision_path: str, image, width: int, height: int, device="cpu"):
        from ...loaders.siglip_loader import encode_start_image

        return encode_start_image(vision_path, image, width, height, device)

    # -- memory, demo -------------------------------------------------------------------------------------
    def memory(self):
        from .planning import MEMORY

        return MEMORY

    def write_demo_models(self, root: str) -> dict[str, str]:
        from .demo import build_models

        return build_models(root)

    def smoke_model(self, folder: str, width: int, height: int, seed: int):
        from .demo import smoke_model

        return smoke_model(folder, width, height, seed)
