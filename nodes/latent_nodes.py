"""HyStreamEmptyLatentVideo: the empty video latent of the VAE's model family (its channels and compression
read from the VAE), so one node serves every family; the same zeros ComfyUI's own empty-latent nodes make."""

from __future__ import annotations

from .. import pipeline
from .guard import node_errors


class HyStreamEmptyLatentVideo:
    DESCRIPTION = ("An empty video latent for text-to-video, shaped for the VAE's model family (HunyuanVideo 1.0: "
                   "16 channels, 8× smaller sides; 1.5: 32 channels, 16×), as ComfyUI's EmptyHunyuanLatentVideo and "
                   "EmptyHunyuanVideo15Latent make them.")
    CATEGORY = "HyStream"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "empty"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": ("HYSTREAM_VAE", {"tooltip": "From HyStreamVAELoader: its model family decides the latent's shape."}),
            "width": ("INT", {"default": 848, "min": 16, "max": 4096, "step": 16, "tooltip": "Video width in pixels."}),
            "height": ("INT", {"default": 480, "min": 16, "max": 4096, "step": 16, "tooltip": "Video height in pixels."}),
            "length": ("INT", {"default": 61, "min": 1, "max": 1025, "step": 4, "tooltip": "Video frames (4k+1)."}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "Videos sampled at once."}),
        }}

    @node_errors("making the empty latent")
    def empty(self, vae, width, height, length, batch_size):
        return ({"samples": pipeline.empty_latent(width, height, length, batch_size, family=vae.family)},)
