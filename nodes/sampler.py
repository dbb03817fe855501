"""HyStreamSampler: flow-matching sampling with the streamed DiT."""

from __future__ import annotations

import logging

from .. import pipeline, rank_workers
from ..pipeline import SampleSettings
from ..sampling.schedule import start_index
from ..sampling.step_cache import report_line
from ..sizes import GIB
from . import host
from .gpus import gpus_input, workers
from .guard import node_errors

log = logging.getLogger("hystream")


class HyStreamSampler:
    DESCRIPTION = ("Samples a video latent with HunyuanVideo's flow-matching Euler sampler; the DiT's blocks "
                   "stream to the GPU one block ahead of the compute. Text-to-video from an empty latent "
                   "(EmptyHunyuanLatentVideo); video-to-video from HyStreamVAEEncode with denoise < 1; image-to-video "
                   "with an I2V DiT and the positive (and negative) of HyStreamImageToVideo.")
    CATEGORY = "HyStream"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        d = SampleSettings()  # the defaults the headless pipeline uses
        return {"required": {
            "dit": ("HYSTREAM_DIT", {"tooltip": "From HyStreamDiTLoader (or HyStreamLoRA)."}),
            "positive": ("CONDITIONING", {"tooltip": "The prompt, from HyStreamTextEncode or ComfyUI's HunyuanVideo encoder."}),
            "latent": ("LATENT", {"tooltip": "EmptyHunyuanLatentVideo for text-to-video; HyStreamVAEEncode for video-to-video."}),
            "seed": ("INT", {"default": d.seed, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                             "tooltip": "Noise seed (the same seed gives the same video in diffusers and ComfyUI)."}),
            "steps": ("INT", {"default": d.steps, "min": 1, "max": 1000, "tooltip": "Sampling steps (20-50)."}),
            "flow_shift": ("FLOAT", {"default": d.flow_shift, "min": 0.1, "max": 100.0, "step": 0.1,
                                     "tooltip": "Shifts the schedule toward high noise; 7 for 720p, 5-9 for lower."}),
            "embedded_guidance": ("FLOAT", {"default": d.embedded_guidance, "min": 0.0, "max": 30.0, "step": 0.1,
                                            "tooltip": "The guidance-distilled model's guidance strength (6 = default)."}),
            "denoise": ("FLOAT", {"default": d.denoise, "min": 0.0, "max": 1.0, "step": 0.01,
                                  "tooltip": "1 = text-to-video; below 1 keeps that much of the input video (V2V)."}),
        }, "optional": {
            "negative": ("CONDITIONING", {"tooltip": "Negative prompt, used when cfg > 1."}),
            "cfg": ("FLOAT", {"default": d.cfg, "min": 1.0, "max": 30.0, "step": 0.1,
                              "tooltip": "True classifier-free guidance with the negative prompt (doubles the time); 1 = off."}),
            "gpus": gpus_input("every step (sequence parallelism)", ", each streaming the DiT from the same file; any "
                               "number: where it does not divide the model's attention heads, ring attention joins in"),
        }}

    @node_errors("sampling")
    def sample(self, dit, positive, latent, seed, steps, flow_shift, embedded_guidance, denoise, negative=None, cfg=1.0,
               gpus=1):
        # dit: the HYSTREAM_DIT handle (the loaded DiT + its LoRAs and step cache); loaded: the DiT itself
        settings = SampleSettings(seed, steps, flow_shift, embedded_guidance, denoise, cfg)
        samples, loaded = latent["samples"], dit.dit
        pipeline.check_latent(samples, loaded.family)
        total = steps - start_index(steps, denoise)
        # Latent2RGB: no preview model inside our budget
        progress = host.Progress(total, preview_format=loaded.family.latent.preview)
        ranks = workers(gpus, loaded.model.device, rank_workers.SampleJob(
            rank_workers.DiTRun.of(loaded, positive, negative, dit.loras, dit.step_cache), samples, settings))
        try:
            loaded.stats.reset()  # this run's counters: ComfyUI may hand us a cached loader output again
            loaded.to_device()
            with ranks as group:  # gpus > 1: this process is rank 0 (progress, previews, Cancel)
                loaded.model.spread_over(group)
                out = pipeline.sample(loaded, positive, samples, settings, negative=negative, loras=dit.loras,
                                      on_step=lambda s: progress.update(s.index + 1, s.total, s.x0),
                                      interrupt=host.interrupt_check, step_cache=dit.step_cache)
            plan = loaded.streamer.describe_plan() or "all blocks streamed"
            act = loaded.model.activation_bytes(tuple(samples.shape), positive[0][0].shape[1]) / GIB
            log.info("HyStream sampler: %d steps on %s%s; plan: %s; block weights %s; activations %.2f GiB (lean blocks); "
                     "%s%s", total, loaded.model.device, ranks_note(loaded.model, gpus), plan,
                     block_weights_dtype(loaded.streamer), act,
                     loaded.stats.summary(), report_line(loaded.step_cache_report))
        finally:
            loaded.model.spread_over(None)
            loaded.release_device()
            host.empty_cache()
        drop = pipeline.dropped_frames(loaded)  # e.g. HunyuanVideo-I2V latent concat: its reference drops 4 frames
        return (pipeline.latent_output(out, drop),)


def ranks_note(model, gpus: int) -> str:
    """' (2 ranks, 1024 of 2048 image tokens each, ulysses 2)': how the last forward's tokens lay ('' on one GPU)."""
    split = model.last_split
    return f" ({gpus} ranks, {split.share} of {split.n_tokens} image tokens each, {split.report()['attention']})" \
        if gpus > 1 and split else ""


def block_weights_dtype(streamer) -> str:
    """The dtype holding most of the streamed blocks' bytes (what weight_dtype chose), for the report."""
    size: dict = {}
    for index in range(streamer.block_count()):
        for slot in streamer.layout(index).slots:
            size[slot.dtype] = size.get(slot.dtype, 0) + slot.nbytes
    return str(max(size, key=size.get)).removeprefix("torch.") if size else "none"
