"""Loader nodes: DiT, text encoders, VAE, LoRA. They open files (headers and small parts only) and hand
over handles; nothing stays on the GPU between executions."""

from __future__ import annotations

from ..errors import InputError
from ..families import registry
from ..loaders.dtypes import COMPUTE_DTYPES, WEIGHT_DTYPES
from ..loaders.lora import load_lora
from ..loading import load_dit, load_text_encoder, load_vae
from . import host
from .files import missing_file, model_file
from .guard import node_errors
from .handles import DiTHandle

CATEGORY = "HyStream"


class HyStreamDiTLoader:
    DESCRIPTION = (f"Opens a video diffusion transformer ({registry.titles()}, told apart by its weights) for "
                   "streaming: only the file header and the small non-block parts are read; the blocks stream from "
                   "disk/RAM to the GPU one block ahead of the compute. Any layout (Comfy-Org, Tencent, kijai, "
                   "diffusers) in bf16/fp16/fp8, or a GGUF (Q8_0 … Q3_K blocks stream quantised).")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("HYSTREAM_DIT",)
    RETURN_NAMES = ("dit",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "dit_name": (host.model_files("diffusion_models", also=(".gguf",)), {
                "tooltip": "The DiT file from models/diffusion_models (or models/unet): "
                           f"{registry.file_examples('dit')}. A GGUF's blocks stream quantised and are decoded on "
                           "the GPU at use."}),
            "weight_dtype": (list(WEIGHT_DTYPES), {"default": "auto", "tooltip":
                "auto: as stored (compute in bf16 on GPU, fp32 on CPU). bf16/fp16: convert float weights. "
                "fp8_e4m3fn: store block weights as fp8 (half the bytes to stream), compute in bf16."}),
            "vram_budget_gb": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1024.0, "step": 0.5, "tooltip":
                "GPU memory for the sampling stage (weights + ring + activations); blocks that fit stay "
                "resident, the rest stream. 0 = automatic from free VRAM."}),
            "prefetch_blocks": ("INT", {"default": 1, "min": 0, "max": 8, "tooltip":
                "How many blocks are copying ahead of the compute (ring = this + 1 slots). 1 hides the copy on "
                "PCIe 4; 2 helps slow buses; 0 copies synchronously."}),
        }, "optional": {
            "compute_dtype": (list(COMPUTE_DTYPES), {"default": "auto", "tooltip":
                "auto: bf16 on RTX 30xx/40xx/A100 and newer, fp32 on older GPUs (no bf16 kernels there), fp32 on "
                "CPU. fp16 overflows on HunyuanVideo: choose it only to try; a NaN stops the run with an error."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, dit_name):
        return missing_file("diffusion_models", dit_name, "dit_name")

    @node_errors("loading the DiT")
    def load(self, dit_name, weight_dtype, vram_budget_gb, prefetch_blocks, compute_dtype="auto"):
        dit = load_dit(model_file("diffusion_models", dit_name, "dit_name"), host.device(), weight_dtype=weight_dtype,
                       prefetch_blocks=prefetch_blocks, vram_budget_gb=vram_budget_gb, compute=compute_dtype,
                       ram_reserve=host.host_pinned_allowance(), hand_over=host.share_device())
        dit.release_device()
        return (DiTHandle(dit),)


class HyStreamTextEncoderLoader:
    DESCRIPTION = ("Opens a model family's text encoders with their tokenizers (the language model's file tells the "
                   "family): its decoder layers stream like the DiT's (the LM head and unused last layers are never "
                   "read); the second encoder is small and loaded whole.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("HYSTREAM_TEXT_ENCODER",)
    RETURN_NAMES = ("text_encoder",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        files = host.model_files("text_encoders", "clip")
        return {"required": {
            "llm_name": (host.model_files("text_encoders", "clip", also=(".gguf",)), {
                "tooltip": f"The language model from models/text_encoders: {registry.file_examples('llm')}."}),
            "clip_name": (files, {"tooltip": "The second text encoder from models/text_encoders (or models/clip): "
                                             f"{registry.file_examples('second_text')}."}),
        }, "optional": {
            "tokenizer_dir": ("STRING", {"default": "", "tooltip":
                "Folder with tokenizer.json (Llama-3) and/or vocab.json + merges.txt (CLIP), inside ComfyUI's "
                "models folders (relative to models/). Empty: look beside the weights, then in ComfyUI's "
                "bundled tokenizers."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, llm_name, clip_name):
        # ComfyUI files the answer under every input named here, so the message itself says which one it is
        problems = [missing_file("text_encoders", name, input_name)
                    for input_name, name in (("llm_name", llm_name), ("clip_name", clip_name))]
        problems = [p for p in problems if p is not True]
        return " ".join(problems) if problems else True

    @node_errors("loading the text encoders")
    def load(self, llm_name, clip_name, tokenizer_dir=""):
        tokenizers = None
        if tokenizer_dir and tokenizer_dir.strip():
            tokenizers = host.model_folder(tokenizer_dir.strip())
            if tokenizers is None:
                raise InputError("tokenizer_dir: a folder inside ComfyUI's models folders (relative to models/, "
                                 "e.g. text_encoders/my_tokenizer)", repr(tokenizer_dir),
                                 "put the tokenizer files in a folder under ComfyUI/models and name it, or leave "
                                 "tokenizer_dir empty to use the files beside the weights or ComfyUI's own")
        te = load_text_encoder(model_file("text_encoders", llm_name, "llm_name"),
                               model_file("text_encoders", clip_name, "clip_name"),
                               host.device(), tokenizer_dir=tokenizers,
                               host_tokenizer_dirs=host.host_tokenizer_dirs(), hand_over=host.share_device())
        te.release_device()
        return (te,)


class HyStreamVAELoader:
    DESCRIPTION = ("Opens a model family's causal 3D VAE (its weights tell the family; Comfy-Org or "
                   "Tencent/kijai/diffusers layout, told apart by keys).")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("HYSTREAM_VAE",)
    RETURN_NAMES = ("vae",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vae_name": (host.model_files("vae"), {
            "tooltip": f"The VAE from models/vae: {registry.file_examples('vae')}."})}}

    @classmethod
    def VALIDATE_INPUTS(cls, vae_name):
        return missing_file("vae", vae_name, "vae_name")

    @node_errors("loading the VAE")
    def load(self, vae_name):
        vae = load_vae(model_file("vae", vae_name, "vae_name"), host.device())
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
            "lora_name": (host.model_files("loras"), {"tooltip": "A LoRA for the DiT's model from models/loras "
                          "(diffusers/PEFT, Comfy, musubi-tuner/kohya or diffusion-pipe keys)."}),
            "strength": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.05,
                                   "tooltip": "Scale of the LoRA's update (0 = off)."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, lora_name):
        return missing_file("loras", lora_name, "lora_name")

    @node_errors("loading the LoRA")
    def apply(self, dit, lora_name, strength):
        lora = load_lora(model_file("loras", lora_name, "lora_name"), dit.dit.model)
        handle = DiTHandle(dit.dit, dit.loras + ((lora, float(strength)),), dit.step_cache)
        return {"ui": {"text": [lora.summary()]}, "result": (handle,)}  # shown on the node (web/hystream.js)
