"""HyStreamFramePackSampler: a long video from a start image with a FramePack (or FramePack-F1) DiT, section by
section, each section decoded and written to the mp4 as soon as it is sampled."""

from __future__ import annotations

import logging
import os

import torch

from .. import long_video, pipeline, rank_workers
from ..errors import InputError
from ..sampling.long_video import ORDERS, LongVideoSettings, frames_for_seconds
from ..vae.tiling import TileSpec
from ..video_writer import Mp4Writer
from . import host
from .files import model_file
from .gpus import gpus_input, workers
from .guard import node_errors

log = logging.getLogger("hystream")
DEFAULTS = LongVideoSettings(frames=1)
OUTPUTS = {"mp4": False, "mp4 + frames": True}  # whether every frame is also returned as IMAGE


def pick_order(order: str, dit_path: str) -> str:
    """auto: FramePack-F1 files (F1 in the name, as lllyasviel and kijai name them) sample forward, FramePack
    backwards (anti-drifting); the weights of both are the same architecture."""
    if order != "auto":
        return order
    return "forward" if "f1" in os.path.basename(os.path.normpath(dit_path)).lower().replace("-", "_").split("_") \
        else "inverted"


def vae_on_device(vae, latent_shape: tuple, what: str, fn):
    """`fn(spec)` with the VAE on the device and the tiles its memory allows (no progress bar of its own: the
    sampler's counts the sections)."""
    spec, needed = pipeline.vae_stage_plan(vae, latent_shape, TileSpec(), what, host.available_vram(vae.device))
    host.make_room(needed, vae.device)
    try:
        vae.to_device()
        return fn(spec)
    finally:
        vae.release_device()
        host.empty_cache()


class HyStreamFramePackSampler:
    DESCRIPTION = ("A long video from a start image with a FramePack DiT (FramePackI2V_HY: sampled backwards from the "
                   "end, anti-drifting; FramePack-F1: forward). Each section is one streamed run conditioned on a "
                   "packed history of fixed size, then decoded and written to the mp4 at once: memory does not grow "
                   "with the length. Progress and previews per step; Cancel stops between blocks.")
    CATEGORY = "HyStream"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("frames",)
    OUTPUT_TOOLTIPS = (("The video's last frame (a start image for the next video); with output 'mp4 + frames', "
                       "every frame (memory then grows with the length)."),)
    FUNCTION = "generate"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        d = DEFAULTS
        return {"required": {
            "dit": ("HYSTREAM_DIT", {"tooltip": "A FramePack DiT from HyStreamDiTLoader (FramePackI2V_HY, FramePack-F1)."}),
            "vae": ("HYSTREAM_VAE", {"tooltip": "HunyuanVideo's VAE, from HyStreamVAELoader."}),
            "positive": ("CONDITIONING", {"tooltip": "The prompt, from HyStreamTextEncode."}),
            "start_image": ("IMAGE", {"tooltip": "The video's first frame (cropped to the video's aspect, resized)."}),
            "vision_name": (host.model_files("clip_vision"), {
                "tooltip": "SigLIP from models/clip_vision (sigclip_vision_patch14_384.safetensors): the start "
                           "image's states, loaded for this image and freed."}),
            "width": ("INT", {"default": 640, "min": 16, "max": 2048, "step": 16, "tooltip": "Video width in pixels."}),
            "height": ("INT", {"default": 480, "min": 16, "max": 2048, "step": 16, "tooltip": "Video height in pixels."}),
            "seconds": ("FLOAT", {"default": 5.0, "min": 0.1, "max": 120.0, "step": 0.1,
                                  "tooltip": "Length at FramePack's 30 fps (the last section may round it up)."}),
            "order": (["auto", *ORDERS], {"default": "auto", "tooltip": "auto: forward for FramePack-F1 files (F1 "
                                                                         "in the name), inverted otherwise."}),
            "window": ("INT", {"default": d.window, "min": 1, "max": 33,
                               "tooltip": "Latent frames per section (9 = FramePack's 33 video frames)."}),
            "steps": ("INT", {"default": d.steps, "min": 1, "max": 200, "tooltip": "Sampling steps per section."}),
            "embedded_guidance": ("FLOAT", {"default": d.embedded_guidance, "min": 0.0, "max": 32.0, "step": 0.1,
                                            "tooltip": "Distilled guidance (FramePack's default 10)."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                             "tooltip": "One generator for every section's noise, as the reference draws it."}),
            "filename_prefix": ("STRING", {"default": "HyStream/FramePack", "tooltip": "File name prefix; may "
                                                                                       "contain a subfolder."}),
            "crf": ("INT", {"default": 19, "min": 0, "max": 51, "tooltip": "H.264 quality (19 ≈ visually lossless)."}),
            "output": (list(OUTPUTS), {"default": "mp4", "tooltip": "mp4: frames go to the file as they are made, "
                                       "the node returns the last frame; mp4 + frames: also every frame as IMAGE."}),
        }, "optional": {
            "negative": ("CONDITIONING", {"tooltip": "Negative prompt, used when cfg > 1."}),
            "cfg": ("FLOAT", {"default": d.cfg, "min": 1.0, "max": 30.0, "step": 0.1,
                              "tooltip": "True CFG with the negative prompt (doubles the time); 1 = off, as FramePack runs."}),
            "gpus": gpus_input("every section's steps (sequence parallelism)", "; this one decodes and writes; any number "
                               "(where it does not divide the model's 24 attention heads, ring attention joins in)"),
        }}

    @node_errors("FramePack sampling")
    def generate(self, dit, vae, positive, start_image, vision_name, width, height, seconds, order, window, steps,
                 embedded_guidance, seed, filename_prefix, crf, output="mp4", negative=None, cfg=1.0, gpus=1):
        loaded = dit.dit
        sampler = long_video.section_sampler(loaded)  # a DiT that is not FramePack is refused here
        long_video.check_start_image(start_image)
        pipeline.check_video_size(width, height, 1, loaded.family)
        settings = LongVideoSettings(frames_for_seconds(seconds, sampler.fps), window, steps, embedded_guidance, cfg,
                                     seed, pick_order(order, loaded.path))
        vision = model_file("clip_vision", vision_name, "vision_name")
        states = sampler.image_states(vision, start_image, width, height, host.device())
        shape = loaded.family.latent.shape(width, height, 1)
        start = vae_on_device(vae, shape, "encode", lambda spec: pipeline.encode_start_image(
            vae, start_image, width, height, spec))
        folder, stem, counter, subfolder = host.output_target(filename_prefix, width, height)
        name = f"{stem}_{counter:05}_.mp4"
        total = sampler.sections(settings)
        progress = host.Progress(total * steps, preview_format=loaded.family.latent.preview)
        done = [0]

        def on_step(step):
            progress.update(done[0] * steps + step.index + 1, total * steps, step.x0)

        def decode(latents: torch.Tensor) -> torch.Tensor:
            done[0] += 1
            return vae_on_device(vae, tuple(latents.shape), "decode",
                                 lambda spec: pipeline.decode(vae, latents, spec, clamp=False))

        if output not in OUTPUTS:
            raise InputError(f"output one of {list(OUTPUTS)}", repr(output), "pick mp4 or mp4 + frames")
        kept: list[torch.Tensor] = []

        def sink(frames: torch.Tensor) -> None:
            writer.write(frames)
            if OUTPUTS[output]:
                kept.append(frames)
            else:
                kept[:] = [frames[-1:]]

        loaded.stats.reset()
        ranks = workers(gpus, loaded.model.device, rank_workers.LongVideoJob(
            rank_workers.DiTRun.of(loaded, positive, negative, dit.loras, dit.step_cache), start, states, settings))
        try:
            with ranks as group, Mp4Writer(os.path.join(folder, name), width, height, sampler.fps, crf) as writer:
                loaded.model.spread_over(group)  # gpus > 1: this process is rank 0 (progress, previews, Cancel)
                frames = long_video.sample_long_video(
                    loaded, positive, negative, start, states, settings, decode, sink, loras=dit.loras,
                    step_cache=dit.step_cache, on_step=on_step, interrupt=host.interrupt_check, spill_as=torch.uint8)
        finally:
            loaded.model.spread_over(None)
        log.info("HyStream FramePack: %d sections of %d steps (%s), %d frames at %g fps in %s; %s", total, steps,
                 settings.order, frames, sampler.fps, name, loaded.stats.summary())
        return {"ui": {"images": [{"filename": name, "subfolder": subfolder, "type": "output"}], "animated": (True,)},
                "result": (torch.cat(kept),)}
