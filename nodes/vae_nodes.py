"""HyStreamVAEDecode / HyStreamVAEEncode: tiled, bounded-memory VAE."""

from __future__ import annotations

import contextlib

from .. import pipeline, rank_workers
from ..vae.tiling import Hooks, TileSpec
from . import host
from .gpus import gpus_input, workers
from .guard import node_errors


def tile_inputs():
    # tile sizes default to automatic: the largest tiles the memory the stage gets can hold (a fixed 256 px
    # tile needs 3.7 GiB with HunyuanVideo 1.0's VAE at any video size); the overlaps apply to sizes set by hand
    d = TileSpec()
    return {
        "tile_size": ("INT", {"default": 0, "min": 0, "max": 2048, "step": 16,
                              "tooltip": "Spatial tile in pixels (0 = the largest that fits free memory; 256 is a "
                                         "common fixed choice)."}),
        "tile_overlap": ("INT", {"default": d.overlap, "min": 0, "max": 1024, "step": 8,
                                 "tooltip": "Blended overlap between spatial tiles, in pixels."}),
        "temporal_tile": ("INT", {"default": 0, "min": 0, "max": 512, "step": 4,
                                  "tooltip": "Temporal tile in frames (0 = automatic; 64 is a common fixed choice)."}),
        "temporal_overlap": ("INT", {"default": d.temporal_overlap, "min": 0, "max": 256, "step": 4,
                                     "tooltip": "Blended overlap between temporal tiles, in frames."}),
    }


def run_stage(vae, latent_shape, spec: TileSpec, what: str, fn, shared=None):
    """Resolve the tiles for the memory the host can give, have it free just that, then run `fn(spec,
    hooks)` with the VAE on the device. shared(spec): the workers sharing the tiles (a context giving the
    group or None), or None."""
    progress = host.Progress(1)
    hooks = Hooks(progress=lambda done, total: progress.update(done, total), interrupt=host.interrupt_check)
    spec, needed = pipeline.vae_stage_plan(vae, latent_shape, spec, what, host.available_vram(vae.device))
    host.make_room(needed, vae.device)
    try:
        vae.to_device()
        with shared(spec) if shared else contextlib.nullcontext() as hooks.ranks:
            return fn(spec, hooks)
    finally:
        vae.release_device()
        host.empty_cache()


class HyStreamVAEDecode:
    DESCRIPTION = ("Decodes a video latent in blended tiles (time × space); frames go to RAM as each tile "
                   "finishes, so VRAM holds one tile, never the whole video. Also decodes native HunyuanVideo latents.")
    CATEGORY = "HyStream"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vae": ("HYSTREAM_VAE", {"tooltip": "From HyStreamVAELoader."}),
                             "samples": ("LATENT", {"tooltip": "The sampler's output (raw VAE latents)."}),
                             **tile_inputs()},
                "optional": {"gpus": gpus_input("the tiles", "; tile i is decoded on GPU i mod gpus and blended here")}}

    @node_errors("VAE decoding")
    def decode(self, vae, samples, tile_size, tile_overlap, temporal_tile, temporal_overlap, gpus=1):
        spec = TileSpec(tile_size, tile_overlap, temporal_tile, temporal_overlap)
        latent = samples["samples"]
        pipeline.check_latent(latent, vae.family)
        shared = lambda spec: workers(gpus, vae.device, rank_workers.DecodeJob(vae.path, latent, spec))
        frames = run_stage(vae, tuple(latent.shape), spec, "decode",
                           lambda spec, hooks: pipeline.decode(vae, latent, spec, hooks), shared)
        return (pipeline.drop_leading_frames(frames, samples.get(pipeline.DROP_KEY, 0)),)


class HyStreamVAEEncode:
    DESCRIPTION = ("Encodes video frames into a latent for video-to-video, in blended tiles. The video is cut to "
                   "4k+1 frames and sides its model takes (multiples of 16, centred), with a warning saying what was cut.")
    CATEGORY = "HyStream"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vae": ("HYSTREAM_VAE", {"tooltip": "From HyStreamVAELoader."}),
                             "images": ("IMAGE", {"tooltip": "Video frames, e.g. from HyStreamLoadVideo."}),
                             **tile_inputs()}}

    @node_errors("VAE encoding")
    def encode(self, vae, images, tile_size, tile_overlap, temporal_tile, temporal_overlap):
        spec = TileSpec(tile_size, tile_overlap, temporal_tile, temporal_overlap)
        frames = pipeline.crop_video(vae, images)
        shape = vae.latent.shape(frames.shape[2], frames.shape[1], frames.shape[0])
        return ({"samples": run_stage(vae, shape, spec, "encode",
                                      lambda spec, hooks: pipeline.encode_video(vae, frames, spec, hooks))},)
