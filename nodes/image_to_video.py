"""HyStreamImageToVideo: the start image for HunyuanVideo-I2V and SkyReels-I2V DiTs."""

from __future__ import annotations

from .. import pipeline
from ..vae.tiling import TileSpec
from .guard import node_errors
from .vae_nodes import run_stage


class HyStreamImageToVideo:
    DESCRIPTION = ("Encodes the start image with the VAE and attaches it to the prompt the way ComfyUI's "
                   "HunyuanImageToVideo does, so native and HyStream nodes mix. The sampler uses it as the DiT's "
                   "weights say: HunyuanVideo-I2V (33 channels: latent concat), SkyReels-I2V (32: concat) or, on a "
                   "16-channel DiT, HunyuanVideo-I2V v2 token replace. The image is center-cropped to the video's "
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
        }}

    @node_errors("encoding the start image")
    def encode(self, positive, vae, start_image, width, height, length, negative=None):
        family = vae.family  # the VAE's family: its latent format and how its I2V nodes attach the image
        latent = pipeline.empty_latent(width, height, length, family=family)
        shape = family.latent.shape(width, height, 1)
        image = run_stage(vae, shape, TileSpec(), "encode",
                          lambda spec, hooks: pipeline.encode_start_image(vae, start_image, width, height, spec, hooks))
        neg = pipeline.with_start_image(negative, image, length, family) if negative is not None else None
        return pipeline.with_start_image(positive, image, length, family), neg, {"samples": latent}
