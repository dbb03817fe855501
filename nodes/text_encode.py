"""HyStreamTextEncode (prompt) and HyStreamTextEncodeImage (prompt + start image, HunyuanVideo-I2V) → native
CONDITIONING."""

from __future__ import annotations

import os

from .. import pipeline
from ..families import registry
from ..offload.settings import RunHooks
from . import host
from .files import missing_file, model_file
from .guard import node_errors

TEXT_ENCODER = ("HYSTREAM_TEXT_ENCODER", {"tooltip": "From HyStreamTextEncoderLoader."})


def prompt_input(tooltip: str) -> tuple:
    return ("STRING", {"multiline": True, "dynamicPrompts": True, "tooltip": tooltip})


class HyStreamTextEncode:
    DESCRIPTION = ("Encodes the prompt with the model family's text encoders (the language model's layers stream) "
                   "into ComfyUI's native CONDITIONING for that family (it also feeds native nodes). Prompts longer "
                   "than the family's budget are cut with a warning. The same prompt is not encoded twice.")
    CATEGORY = "HyStream"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text_encoder": TEXT_ENCODER,
                             "prompt": prompt_input("What the video shows: subject, action, scene, light, camera.")}}

    @node_errors("encoding the prompt")
    def encode(self, text_encoder, prompt):
        return (run_encoder(text_encoder, lambda: pipeline.encode_prompt(text_encoder, prompt)),)


def run_encoder(text_encoder, encode, extra_bytes: int = 0):
    """`encode()` with CLIP-L on the device, the LLaVA layers streaming, progress per layer."""
    streamer = text_encoder.streamer
    layers = streamer.block_count()
    progress = host.Progress(layers)
    hooks = RunHooks(interrupt=host.interrupt_check, on_block=lambda i: progress.update(i + 1, layers))
    # what stays on the device beside the streamed layers (CLIP-L; + a vision tower); the ring is the streamer's
    host.make_room(text_encoder.device_bytes() + extra_bytes)
    try:
        text_encoder.to_device()
        with streamer.run_hooks(hooks):
            cond = encode()
    finally:
        text_encoder.release_device()
        host.empty_cache()
    progress.update(layers, layers)
    return cond


class HyStreamTextEncodeImage(HyStreamTextEncode):
    DESCRIPTION = ("A prompt with the start image's tokens (HunyuanVideo-I2V): the text encoder's vision tower "
                   "(from models/clip_vision, loaded for this image and freed) turns the start image into the prompt "
                   "template's image tokens; the language model's layers stream as for text. Use it with a "
                   "HunyuanVideo-I2V DiT (SkyReels-I2V takes the plain HyStreamTextEncode) and give the same image "
                   "to HyStreamImageToVideo.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "text_encoder": TEXT_ENCODER,
            "vision_name": (host.model_files("clip_vision"), {
                "tooltip": f"The vision tower from models/clip_vision: {registry.file_examples('vision')}."}),
            "image": ("IMAGE", {"tooltip": "The start image (its first frame is used)."}),
            "prompt": prompt_input("What happens in the video, starting from the image."),
            "image_interleave": ("INT", {"default": 2, "min": 1, "max": 8, "tooltip":
                "Keep every n-th image token: 2 for HunyuanVideo-I2V (33 channels, latent concat), 4 for its "
                "token-replace version (16 channels), as Tencent's pipeline does."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, vision_name):
        return missing_file("clip_vision", vision_name, "vision_name")

    @node_errors("encoding the prompt with the image")
    def encode(self, text_encoder, vision_name, image, prompt, image_interleave):
        path = model_file("clip_vision", vision_name, "vision_name")
        vision_bytes = os.path.getsize(path)
        return (run_encoder(text_encoder, lambda: pipeline.encode_image_prompt(text_encoder, path, image, prompt,
                                                                              image_interleave), vision_bytes),)
