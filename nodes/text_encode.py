"""HyStreamTextEncode: prompt → native CONDITIONING."""

from __future__ import annotations

from .. import pipeline
from . import host
from .guard import node_errors


class HyStreamTextEncode:
    DESCRIPTION = ("Encodes the prompt with LLaVA-Llama-3 (layers streamed) and CLIP-L into ComfyUI's native "
                   "HunyuanVideo CONDITIONING (it also feeds native nodes). Up to 256 prompt tokens; longer "
                   "prompts are cut with a warning. The same prompt is not encoded twice.")
    CATEGORY = "HyStream"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "text_encoder": ("HYSTREAM_TEXT_ENCODER", {"tooltip": "From HyStreamTextEncoderLoader."}),
            "prompt": ("STRING", {"multiline": True, "dynamicPrompts": True,
                                  "tooltip": "What the video shows: subject, action, scene, light, camera."}),
        }}

    @node_errors("encoding the prompt")
    def encode(self, text_encoder, prompt):
        layers = len(text_encoder.streamer.blocks)
        progress = host.Progress(layers)
        streamer = text_encoder.streamer
        streamer.on_block = lambda i: progress.update(i + 1, layers)
        streamer.interrupt = host.interrupt_check
        host.make_room(text_encoder.clip_bytes())  # CLIP-L; the LLaVA layers' ring is planned by the streamer
        try:
            text_encoder.to_device()
            cond = pipeline.encode_prompt(text_encoder, prompt)
        finally:
            streamer.on_block = streamer.interrupt = None
            text_encoder.release_device()
            host.empty_cache()
        progress.update(layers, layers)
        return (cond,)
