"""The stages in order — encode the prompt, sample, decode — for the CLI and the nodes alike, over any
model family: each stage asks the loaded model's family (families/) what is specific to it.

Data between stages is what ComfyUI passes: the family's native CONDITIONING and raw VAE latents (the VAE's
scaling factor is applied here, inside the sampler, as native ComfyUI does), so HyStream's stages and
native nodes mix. The VAE stages are in video_stages.py.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .errors import InputError
from .families import registry as families
from .loaders.lora import LoRA, attach_loras
from .numerics import check_finite
from .offload.settings import RunHooks
from .sampling import latents
from .sampling.euler import Step, euler, noise, noised
from .sampling.schedule import shifted_sigmas, start_index
from .sampling.step_cache import StepCache, StepCacheSettings
from .sampling.step_caches import make_step_cache
from .video_stages import (  # noqa: F401
    DROP_KEY,
    crop_video,
    decode,
    drop_leading_frames,
    encode_start_image,
    encode_video,
    fit_image,
    latent_output,
    vae_stage_plan,
)

log = logging.getLogger("hystream")


# -- sizes -----------------------------------------------------------------------------------------
def check_video_size(width: int, height: int, frames: int, family=None) -> None:
    """Before any model work: sides and frame count the family's VAE and DiT take (default family: the first)."""
    latents.check_video_size((family or families.default()).latent, width, height, frames)


def empty_latent(width: int, height: int, frames: int, batch: int = 1, family=None) -> torch.Tensor:
    """The zeros the host's empty latent node makes for the family (default: the first registered)."""
    return latents.empty_latent((family or families.default()).latent, width, height, frames, batch)


def check_latent(latent: torch.Tensor, family=None) -> None:
    latents.check_latent((family or families.default()).latent, latent)


# -- sampling --------------------------------------------------------------------------------------
@dataclass
class SampleSettings:
    seed: int = 0
    steps: int = 30
    flow_shift: float = 7.0
    embedded_guidance: float = 6.0
    denoise: float = 1.0
    cfg: float = 1.0


def sample(dit, positive, latent: torch.Tensor, settings: SampleSettings | None = None, *, negative=None,
           loras: tuple[tuple[LoRA, float], ...] = (), on_step: Callable[[Step], None] | None = None,
           interrupt: Callable[[], None] | None = None, step_cache: StepCacheSettings | None = None) -> torch.Tensor:
    """Flow-matching Euler sampling with the streamed DiT. `latent`: raw VAE latents (zeros for text-to-
    video; encoded video for video-to-video with denoise < 1). Returns raw latents, float32, CPU.
    step_cache: reuse the blocks' residual on steps that barely change (sampling/step_cache.py, with the
    DiT's family's calibrations); what it did is left in `dit.step_cache_report`."""
    family, s = dit.family, settings if settings is not None else SampleSettings()
    fmt = family.latent
    latents.check_latent(fmt, latent)
    if s.cfg < 1.0:
        raise InputError("cfg ≥ 1 (1 = off)", f"{s.cfg}", "use 1.0, or 4-8 with a negative prompt")
    sigmas = shifted_sigmas(s.steps, s.flow_shift)
    first = start_index(s.steps, s.denoise)
    raw = latent.float().cpu()
    if first >= s.steps:
        return raw.clone()  # denoise 0: nothing to do
    sigmas = sigmas[first:]
    denoiser = family.denoiser(dit, positive, negative, raw, s)
    denoiser.schedule(sigmas)
    eps = noise(tuple(raw.shape), s.seed)
    x = eps if first == 0 else noised(raw * fmt.scaling, eps, sigmas[0])
    x = denoiser.initial(x, from_noise=first == 0)

    x = run_denoiser(dit, denoiser, x, sigmas, raw.shape[3] * fmt.space, loras=loras, on_step=on_step,
                     interrupt=interrupt, step_cache=step_cache)
    return x / fmt.scaling


def run_denoiser(dit, denoiser, x: torch.Tensor, sigmas: torch.Tensor, height: int, *,
                 loras: tuple[tuple[LoRA, float], ...] = (), on_step: Callable[[Step], None] | None = None,
                 interrupt: Callable[[], None] | None = None, step_cache: StepCacheSettings | None = None) -> torch.Tensor:
    """One streamed Euler run of `denoiser` from `x` (model space) over `sigmas`: the LoRAs attached, the
    step cache (for a video `height` pixels high) wired to the streamer, one streaming session, every step's
    output checked. A sampler that runs several (a long video's sections) calls it once per run."""
    model, streamer, group = dit.model, dit.streamer, dit.model.sequence_group
    cache = make_step_cache(step_cache, len(sigmas) - 1, height, dit.family.caches,
                            on_decided=streamer.resume, on_skip_rest=streamer.end_pass,
                            agree=(lambda skip: group.decide(skip, model.device)) if group is not None else None)
    per_step: list[int] = []  # bytes streamed in each step (prefetch of the next step's first blocks included)

    def velocity(xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if interrupt is not None:
            interrupt()
        copied = streamer.stats.bytes_copied
        v = denoiser.velocity(xt, t, cache)
        per_step.append(streamer.stats.bytes_copied - copied)
        # checked every step: a NaN at step 3 of 30 stops there, not after 27 wasted steps
        return check_finite(v, f"the DiT's output at sampling step {len(per_step)} of {len(sigmas) - 1}")

    text, shape = denoiser.text_tokens, denoiser.model_shape(tuple(x.shape))
    chunk = model.chunk_tokens
    try:
        with torch.no_grad(), attach_loras(model, loras), cached_run(dit, cache):
            model.chunk_tokens = chunk or fit_chunk(dit, shape, text)
            act = model.activation_bytes(shape, text)
            if cache is not None:
                act += cache.device_bytes(model.image_tokens(shape), model.cfg.hidden, model.compute_dtype.itemsize,
                                          denoiser.passes)
            with streamer.session(activation_bytes=act, hooks=RunHooks(interrupt=interrupt)):
                x = euler(velocity, x, sigmas, on_step)
    finally:
        model.chunk_tokens = chunk
        full = streamer.streamed_bytes_per_pass() * denoiser.passes  # what a step streams without the cache
        dit.step_cache_report = dict(cache.summary() if cache else {"method": "off", "skipped": 0},
                                     bytes_per_step=per_step, bytes_per_full_step=full,
                                     bytes_not_streamed=max(0, full * len(per_step) - sum(per_step)))
    return x


@contextlib.contextmanager
def cached_run(dit, cache: StepCache | None):
    """Hand a step-cache policy to the DiT for one run and wire it to the streamer: TeaCache's probe (a
    device copy of what it probes, made once from the host store), First-Block Cache's pause after the
    decision block (a skipped step copies nothing after it)."""
    model, streamer = dit.model, dit.streamer
    if cache is None:
        yield
        return
    first = model.cache_decision_block()  # in the order the blocks run
    probe = dit.read_block(first) if cache.needs_probe else None
    if cache.pauses_after_first_block:  # the cache calls the streamer's resume / end_pass once it decides
        streamer.pause_after(dit.units.last_of(first))
    model.use_step_cache(cache, probe)
    try:
        yield
    finally:
        model.use_step_cache(None)
        streamer.pause_after(None)


def fit_chunk(dit, x_shape: tuple, text: int) -> int | None:
    """On a GPU, the query chunk whose activations fit what the stage leaves for them (the budget or the
    free memory, minus the fixed weights and the smallest ring). Only changes anything where SDPA falls
    back to its math kernel (GPUs before sm80 in bf16/fp16): there a chunk's N×N scores dominate."""
    room = dit.streamer.activation_room()
    if room is None or dit.model.attention_kernel() != "math":
        return None
    return dit.model.choose_chunk(x_shape, text, room)


# -- the prompt --------------------------------------------------------------------------------------
def encode_prompt(text_encoder, prompt: str) -> list:
    """Prompt → the family's native CONDITIONING (cached per prompt and encoder files)."""
    if not isinstance(prompt, str) or (not prompt.strip() and not text_encoder.empty_prompt_ok):
        raise InputError("a non-empty prompt", repr(prompt), "describe the video you want")
    return text_encoder.conditioning(prompt)


def encode_image_prompt(text_encoder, vision_path: str, image, prompt: str, interleave: int = 2) -> list:
    """A prompt with the start image's tokens (HunyuanVideo-I2V): the family's vision tower, loaded for the
    image and freed, then the text encoder's layers stream as for text alone."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError("a non-empty prompt", repr(prompt), "describe the video you want")
    return text_encoder.image_conditioning(vision_path, image, prompt, interleave)


def with_start_image(conditioning, image_latent: torch.Tensor, frames: int, family=None, vision_states=None) -> list:
    """CONDITIONING with a start image attached as the host's image-to-video node does for the family
    (`vision_states`: the start image's vision states, for a family whose DiT takes them)."""
    return (family or families.default()).attach_start_image(conditioning, image_latent, frames, vision_states)


def dropped_frames(dit) -> int:
    """Decoded frames the family's reference drops after sampling with this DiT."""
    return dit.family.dropped_frames(dit)
