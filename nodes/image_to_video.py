"""HyStreamImageToVideo: the start image for HunyuanVideo-I2V, SkyReels-I2V and HunyuanVideo 1.5 I2V DiTs."""

from __future__ import annotations

from .. import pipeline
from ..errors import InputError
from ..vae.tiling import TileSpec
from . import host
from .files import model_file
from .guard import node_errors
from .vae_nodes import run_stage


class HyStreamImageToVideo:
    DESCRIPTION = ("Encodes the start image with the VAE and attaches it to the prompt the way ComfyUI's "
                   "HunyuanImageToVideo does, so native and HyStream nodes mix. The sampler uses it as the DiT's "
                   "weights say: HunyuanVideo-I2V (33 channels: latent concat), SkyReels-I2V (32: concat) or, on a "
                   "16-channel DiT, HunyuanVideo-I2V v2 token replace; HunyuanVideo 1.5 also takes the image's SigLIP states "
                   "(vision_name, or a clip_vision_output from ComfyUI's CLIPVisionEncode). The image is center-cropped to the video's "
                   "aspect ratio and resized, with a warning saying what was cut.")
    CATEGORY = "HyStream"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING", "LATENT")
    RETURN_NAMES = ("positive", "negative", "latent")
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "positive": ("CONDITIONING", {"tooltip": "The prompt, from HyStreamTextEncode."}),
            "vae": ("HYSTREAM_VAE", {"tooltip": "From HyStreamVAELoader."}),
            "start_image": ("IMAGE", {"tooltip": "The video's first frame (its first image is used)."}),
            "width": ("INT", {"default": 848, "min": 16, "max": 4096, "step": 16, "tooltip": "Video width in pixels."}),
            "height": ("INT", {"default": 480, "min": 16, "max": 4096, "step": 16, "tooltip": "Video height in pixels."}),
            "length": ("INT", {"default": 53, "min": 1, "max": 1025, "step": 4, "tooltip": "Video frames (4k+1)."}),
        }, "optional": {
            "negative": ("CONDITIONING", {"tooltip": "Negative prompt for true CFG: it gets the start image too."}),
            "vision_name": (["none", *host.model_files("clip_vision")], {
                "default": "none", "tooltip": "HunyuanVideo 1.5 I2V: SigLIP from models/clip_vision "
                "(sigclip_vision_patch14_384.safetensors), loaded for this image and freed."}),
            "clip_vision_output": ("CLIP_VISION_OUTPUT", {
                "tooltip": "HunyuanVideo 1.5 I2V: the start image's SigLIP states from ComfyUI's CLIPVisionEncode "
                           "(instead of vision_name)."}),
        }}

    @node_errors("encoding the start image")
    def encode(self, positive, vae, start_image, width, height, length, negative=None, vision_name="none",
               clip_vision_output=None):
        family = vae.family  # the VAE's family: its latent format and how its I2V nodes attach the image
        latent = pipeline.empty_latent(width, height, length, family=family)
        states = None
        if clip_vision_output is not None and vision_name not in (None, "", "none"):
            raise InputError("vision_name or clip_vision_output", "both", "connect one of them")
        if clip_vision_output is not None:
            states = clip_vision_output
        elif vision_name not in (None, "", "none"):
            path = model_file("clip_vision", vision_name, "vision_name")
            states = family.start_image_states(path, start_image, width, height, host.device())
            if states is None:
                raise InputError(f"no vision file for {family.title} here", f"vision_name {vision_name!r}",
                                 "set vision_name to none (its prompts take the image in HyStreamTextEncodeImage)")
        shape = family.latent.shape(width, height, 1)
        image = run_stage(vae, shape, TileSpec(), "encode",
                          lambda spec, hooks: pipeline.encode_start_image(vae, start_image, width, height, spec, hooks))

        def attach(cond):
            return pipeline.with_start_image(cond, image, length, family, states)

        return attach(positive), (attach(negative) if negative is not None else None), {"samples": latent}
