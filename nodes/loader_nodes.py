"""Loader nodes: DiT, text encoders, VAE, LoRA. They open files (headers and small parts only) and hand
over handles; nothing stays on the GPU between executions."""

from __future__ import annotations

from dataclasses import dataclass

from ..loaders.dit_loader import LoadedDiT, load_dit
from ..loaders.dtypes import WEIGHT_DTYPES
from ..loaders.lora import LoRA, load_lora
from ..loaders.text_encoder_loader import load_text_encoder
from ..loaders.vae_loader import load_vae
from . import host

CATEGORY = "HyStream"


@dataclass(frozen=True)
class DiTHandle:
    """HYSTREAM_DIT: the loaded DiT plus the LoRAs chained onto it (the DiT itself is never modified, so
    one loader output can feed graphs with and without LoRAs)."""

    dit: LoadedDiT
    loras: tuple[tuple[LoRA, float], ...] = ()


def missing_file(folder: str, name: str) -> bool | str:
    """VALIDATE_INPUTS answer: True, or our message for ComfyUI's node error."""
    if name and host.model_path(folder, name):
        return True
    return (f"File not found: expected {name!r} in models/{folder}; found {len(host.model_files(folder))} other "
            f"files there. What to do: put the file in {host.models_dir(folder)} (or an extra_model_paths folder) "
            "and refresh the page.")


class HyStreamDiTLoader:
    DESCRIPTION = ("Opens the HunyuanVideo transformer for streaming: only the file header and the small "
                   "non-block parts are read; the 60 blocks stream from disk/RAM to the GPU one block ahead of "
                   "the compute. Any layout (Comfy-Org, Tencent, kijai, diffusers) in bf16/fp16/fp8.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("HYSTREAM_DIT",)
    RETURN_NAMES = ("dit",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "dit_name": (host.model_files("diffusion_models"), {
                "tooltip": "The DiT file from models/diffusion_models, e.g. hunyuan_video_t2v_720p_bf16.safetensors."}),
            "weight_dtype": (list(WEIGHT_DTYPES), {"default": "auto", "tooltip":
                "auto: as stored (compute in bf16 on GPU, fp32 on CPU). bf16/fp16: convert float weights. "
                "fp8_e4m3fn: store block weights as fp8 (half the bytes to stream), compute in bf16."}),
            "vram_budget_gb": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1024.0, "step": 0.5, "tooltip":
                "GPU memory for the sampling stage (weights + ring + activations); blocks that fit stay "
                "resident, the rest stream. 0 = automatic from free VRAM."}),
            "prefetch_blocks": ("INT", {"default": 1, "min": 0, "max": 8, "tooltip":
                "How many blocks are copying ahead of the compute (ring = this + 1 slots). 1 hides the copy on "
                "PCIe 4; 2 helps slow buses; 0 copies synchronously."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, dit_name):
        return missing_file("diffusion_models", dit_name)

    def load(self, dit_name, weight_dtype, vram_budget_gb, prefetch_blocks):
        dit = load_dit(host.model_path("diffusion_models", dit_name), host.device(), weight_dtype=weight_dtype,
                       prefetch_blocks=prefetch_blocks, vram_budget_gb=vram_budget_gb)
        dit.release_device()
        return (DiTHandle(dit),)


class HyStreamTextEncoderLoader:
    DESCRIPTION = ("Opens LLaVA-Llama-3 (its layers stream like the DiT's; the LM head and last two layers are "
                   "never read) and CLIP-L, with their tokenizers.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("HYSTREAM_TEXT_ENCODER",)
    RETURN_NAMES = ("text_encoder",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        files = host.model_files("text_encoders", "clip")
        return {"required": {
            "llm_name": (files, {"tooltip": "LLaVA-Llama-3 from models/text_encoders, e.g. "
                                            "llava_llama3_fp8_scaled.safetensors or llava_llama3_fp16.safetensors."}),
            "clip_name": (files, {"tooltip": "CLIP-L from models/text_encoders (or models/clip): clip_l.safetensors."}),
        }, "optional": {
            "tokenizer_dir": ("STRING", {"default": "", "tooltip":
                "Folder with tokenizer.json (Llama-3) and/or vocab.json + merges.txt (CLIP). Empty: look beside "
                "the weights, then in ComfyUI's bundled tokenizers."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, llm_name, clip_name):
        for name in (llm_name, clip_name):
            ok = missing_file("text_encoders", name)
            if ok is not True:
                return ok
        return True

    def load(self, llm_name, clip_name, tokenizer_dir=""):
        te = load_text_encoder(host.model_path("text_encoders", llm_name), host.model_path("text_encoders", clip_name),
                               host.device(), tokenizer_dir=tokenizer_dir.strip() or None,
                               host_tokenizer_dirs=host.host_tokenizer_dirs())
        te.release_device()
        return (te,)


class HyStreamVAELoader:
    DESCRIPTION = "Opens HunyuanVideo's causal 3D VAE (Comfy-Org or Tencent/kijai/diffusers layout, told apart by keys)."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("HYSTREAM_VAE",)
    RETURN_NAMES = ("vae",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vae_name": (host.model_files("vae"), {
            "tooltip": "The VAE from models/vae: hunyuan_video_vae_bf16.safetensors."})}}

    @classmethod
    def VALIDATE_INPUTS(cls, vae_name):
        return missing_file("vae", vae_name)

    def load(self, vae_name):
        vae = load_vae(host.model_path("vae", vae_name), host.device())
        vae.release_device()
        return (vae,)


class HyStreamLoRA:
    DESCRIPTION = ("Adds a LoRA to the DiT (chainable). The weights are never rewritten: the low-rank update is "
                   "applied to each block on the GPU as it arrives, so it works with streaming and fp8, and "
                   "changing the strength needs no reload.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("HYSTREAM_DIT",)
    RETURN_NAMES = ("dit",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "dit": ("HYSTREAM_DIT", {"tooltip": "The DiT (from HyStreamDiTLoader or another HyStreamLoRA)."}),
            "lora_name": (host.model_files("loras"), {"tooltip": "A HunyuanVideo LoRA from models/loras "
                          "(diffusers/PEFT, Comfy, musubi-tuner/kohya or diffusion-pipe keys)."}),
            "strength": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.05,
                                   "tooltip": "Scale of the LoRA's update (0 = off)."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, lora_name):
        return missing_file("loras", lora_name)

    def apply(self, dit, lora_name, strength):
        lora = load_lora(host.model_path("loras", lora_name), dit.dit.model)
        return (DiTHandle(dit.dit, dit.loras + ((lora, float(strength)),)),)
