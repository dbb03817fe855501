"""The stages in order — encode the prompt, sample, decode — for the CLI and the nodes alike.

Data between stages is what ComfyUI passes: CONDITIONING `[[states [1,L,4096], {"pooled_output": [1,768],
"attention_mask": [1,L]}]]` and raw VAE latents `[B,16,T,H/8,W/8]` (the VAE's scaling factor is applied
here, inside the sampler, as native ComfyUI does), so HyStream's stages and native nodes mix.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Callable

import torch

from .errors import InputError, NonFiniteError
from .families.base import CacheConstants
# TODO(family registry): the DiT's family's constants, looked up in the registry, instead of this import
from .families.hunyuan_video.caches import CACHE_CONSTANTS
from .loaders.lora import LoRA, attach_loras
from .models.text_encoder import PromptEmbeds
from .models.layers import Modulation
from .offload.binding import bind
from .offload.settings import RunHooks
from .sizes import automatic_budget
from .sampling.euler import Step, cfg_combine, euler, noise, noised
from .sampling import image_condition as i2v
from .sampling.step_cache import StepCache, StepCacheSettings
from .sampling.step_caches import make_step_cache
from .sampling.schedule import shifted_sigmas, start_index
from .vae import codec as vae_codec
from .vae.model import SCALING_FACTOR
from .vae.tiling import Hooks, TileSpec

log = logging.getLogger("hystream")
LATENT_CHANNELS = 16


# -- conditioning ----------------------------------------------------------------------------------
def to_conditioning(embeds: PromptEmbeds) -> list:
    """ComfyUI's native CONDITIONING for HunyuanVideo."""
    return [[embeds.states, {"pooled_output": embeds.pooled, "attention_mask": embeds.mask}]]


@dataclass
class Cond:
    states: torch.Tensor  # [1, L, C]
    mask: torch.Tensor | None  # [1, L] or None (all valid)
    pooled: torch.Tensor  # [1, P]
    extra: dict = field(default_factory=dict)  # the rest of the entry (an I2V start image, see sampling/image_condition)


def read_conditioning(cond, what: str = "positive") -> Cond:
    """Accept CONDITIONING made by HyStreamTextEncode or by ComfyUI's own HunyuanVideo text encoder
    (attention_mask optional, text not padded)."""
    fix = "connect the CONDITIONING of HyStreamTextEncode (or ComfyUI's HunyuanVideo text encoder)"
    if not isinstance(cond, (list, tuple)) or not cond or not isinstance(cond[0], (list, tuple)) or len(cond[0]) < 2:
        raise InputError(f"{what} CONDITIONING: [[states, {{'pooled_output': ...}}]]", f"{type(cond).__name__}", fix)
    if len(cond) > 1:
        log.warning("HyStream: the %s conditioning has %d entries; the first one is used", what, len(cond))
    states, extra = cond[0][0], cond[0][1]
    if not torch.is_tensor(states) or states.dim() != 3 or states.shape[0] != 1:
        raise InputError(f"{what} text states [1, L, 4096]", f"{getattr(states, 'shape', type(states).__name__)}", fix)
    pooled = extra.get("pooled_output") if isinstance(extra, dict) else None
    if pooled is None:
        raise InputError(f"a pooled CLIP-L vector ('pooled_output') in the {what} CONDITIONING", "none",
                         fix + "; a conditioning from another model family has no HunyuanVideo pooled vector")
    mask = extra.get("attention_mask")
    if mask is not None:
        mask = mask.reshape(1, -1)
        if mask.shape[1] != states.shape[1]:
            raise InputError(f"an attention_mask as long as the text ({states.shape[1]})", f"{mask.shape[1]}", fix)
    return Cond(states, mask, pooled.reshape(1, -1), extra)


# -- numerics --------------------------------------------------------------------------------------
CAUSES = ("fp16 compute overflowing (use weight_dtype auto or bf16), a damaged or incomplete model file "
          "(download it again), or a LoRA strength too high (lower it)")


def non_finite_count(t: torch.Tensor, rows: int = 8) -> int:
    """How many NaN/Inf values `t` holds, checked a few rows at a time (no whole-size mask)."""
    bad = 0
    flat = t.reshape(t.shape[0], -1) if t.dim() > 1 else t.reshape(1, -1)
    for a in range(0, flat.shape[0], rows):
        bad += int((~torch.isfinite(flat[a:a + rows])).sum())
    return bad


def check_finite(t: torch.Tensor, what: str, fix: str = CAUSES) -> torch.Tensor:
    bad = non_finite_count(t)
    if bad:
        raise NonFiniteError(f"finite values in {what}", f"{bad:,} of {t.numel():,} values are NaN or Inf",
                             f"the likely causes are {fix}")
    return t


# -- sizes -----------------------------------------------------------------------------------------
def check_video_size(width: int, height: int, frames: int) -> None:
    """Before any model work: sides multiples of 16 (8× VAE, 2× DiT patches), 4k+1 frames."""
    bad = []
    if width < 16 or width % 16:
        bad.append(f"width {width}")
    if height < 16 or height % 16:
        bad.append(f"height {height}")
    if frames < 1 or (frames - 1) % 4:
        bad.append(f"{frames} frames")
    if bad:
        near = f"{max(16, round(width / 16) * 16)}×{max(16, round(height / 16) * 16)}, {max(1, round((frames - 1) / 4) * 4 + 1)} frames"
        raise InputError("width and height multiples of 16 and a frame count of 4k+1 (1, 5, 9, …, 129)",
                         ", ".join(bad), f"use e.g. {near}")


def empty_latent(width: int, height: int, frames: int, batch: int = 1) -> torch.Tensor:
    """The same zeros ComfyUI's EmptyHunyuanLatentVideo makes."""
    check_video_size(width, height, frames)
    return torch.zeros(batch, LATENT_CHANNELS, (frames - 1) // 4 + 1, height // 8, width // 8)


def check_latent(latent: torch.Tensor) -> None:
    if not torch.is_tensor(latent) or latent.dim() != 5 or latent.shape[1] != LATENT_CHANNELS:
        raise InputError(f"a video LATENT [B, {LATENT_CHANNELS}, T, H/8, W/8]",
                         f"{getattr(latent, 'shape', type(latent).__name__)}",
                         "use EmptyHunyuanLatentVideo or HyStreamVAEEncode for the latent")
    h, w = latent.shape[3], latent.shape[4]
    if h % 2 or w % 2:
        raise InputError("a latent whose pixel width and height are multiples of 16",
                         f"a latent of {w * 8}×{h * 8} px", f"use {w // 2 * 16}×{h // 2 * 16} or {(w + 1) // 2 * 16}×{(h + 1) // 2 * 16}")


# -- sampling --------------------------------------------------------------------------------------
@dataclass
class SampleSettings:
    seed: int = 0
    steps: int = 30
    flow_shift: float = 7.0
    embedded_guidance: float = 6.0
    denoise: float = 1.0
    cfg: float = 1.0


def sample(dit, positive, latent: torch.Tensor, settings: SampleSettings = SampleSettings(), *, negative=None,
           loras: tuple[tuple[LoRA, float], ...] = (), on_step: Callable[[Step], None] | None = None,
           interrupt: Callable[[], None] | None = None, step_cache: StepCacheSettings | None = None,
           cache_constants: CacheConstants | None = None) -> torch.Tensor:
    """Flow-matching Euler sampling with the streamed DiT. `latent`: raw VAE latents (zeros for text-to-
    video; encoded video for video-to-video with denoise < 1). Returns raw latents, float32, CPU.
    step_cache: reuse the blocks' residual on steps that barely change (sampling/step_cache.py); what it
    did is left in `dit.step_cache_report`. cache_constants: the model family's step-cache calibrations
    (None: HunyuanVideo's)."""
    check_latent(latent)
    s = settings
    if s.cfg < 1.0:
        raise InputError("cfg ≥ 1 (1 = off)", f"{s.cfg}", "use 1.0, or 4-8 with a negative prompt")
    pos = read_conditioning(positive, "positive")
    neg = read_conditioning(negative, "negative") if (negative is not None and s.cfg > 1.0) else None
    if s.cfg > 1.0 and neg is None:
        raise InputError("a negative CONDITIONING when cfg > 1", "none", "connect a negative prompt or set cfg to 1")
    sigmas = shifted_sigmas(s.steps, s.flow_shift)
    first = start_index(s.steps, s.denoise)
    raw = latent.float().cpu()
    if first >= s.steps:
        return raw.clone()  # denoise 0: nothing to do
    sigmas = sigmas[first:]
    batch = raw.shape[0]
    model = dit.model
    image = i2v.image_condition(model.cfg.image_condition, i2v.start_image_latent(pos.extra, raw), SCALING_FACTOR, batch)
    eps = noise(tuple(raw.shape), s.seed)
    x = eps if first == 0 else noised(raw * SCALING_FACTOR, eps, sigmas[0])
    if image is not None:
        if image.kind == "token_replace":
            log.info("HyStream: start image on a 16-channel DiT: sampled as HunyuanVideo-I2V token replace (the first "
                     "latent frame is the clean image)")
        x = i2v.initial_latents(image, x, from_noise=first == 0)
    first_tokens = image.first_frame_tokens(model.cfg.patch) if image is not None else 0
    i2v.check_prompt_kind(image, pos.extra.get("hystream_image_interleave"))
    guidance = torch.full((batch,), s.embedded_guidance * 1000.0)

    streamer = dit.streamer
    cache = make_step_cache(step_cache, len(sigmas) - 1, raw.shape[3] * 8, cache_constants or CACHE_CONSTANTS,
                            on_decided=streamer.resume, on_skip_rest=streamer.end_pass)
    per_step: list[int] = []  # bytes streamed in each step (prefetch of the next step's first blocks included)

    def run(cond: Cond, key: str, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        states = cond.states.expand(batch, -1, -1)
        mask = cond.mask.expand(batch, -1) if cond.mask is not None else None
        pooled = cond.pooled.expand(batch, -1)
        if cache is not None:
            cache.begin_pass(key)
        if image is not None:
            xt = i2v.model_input(image, xt)
        return dit(xt, t.expand(batch), states, mask, pooled, guidance, first_frame_tokens=first_tokens).float().cpu()

    def velocity(xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if interrupt is not None:
            interrupt()
        copied = streamer.stats.bytes_copied
        v = run(pos, "positive", xt, t)
        v = cfg_combine(v, run(neg, "negative", xt, t), s.cfg) if neg is not None else v
        v = i2v.hold_first_frame(image, v) if image is not None else v
        per_step.append(streamer.stats.bytes_copied - copied)
        # checked every step: a NaN at step 3 of 30 stops there, not after 27 wasted steps
        return check_finite(v, f"the DiT's output at sampling step {len(per_step)} of {len(sigmas) - 1}")

    text = max(pos.states.shape[1], neg.states.shape[1] if neg is not None else 0)
    chunk = model.chunk_tokens
    try:
        with torch.no_grad(), attach_loras(model, loras), cached_run(dit, cache):
            model.chunk_tokens = chunk or fit_chunk(dit, tuple(x.shape), text)
            act = model.activation_bytes(tuple(x.shape), text)
            if cache is not None:
                tokens = x.shape[2] * (x.shape[3] // model.cfg.patch[1]) * (x.shape[4] // model.cfg.patch[2])
                act += cache.device_bytes(tokens, model.cfg.hidden, model.compute_dtype.itemsize, 1 + (neg is not None))
            with streamer.session(activation_bytes=act, hooks=RunHooks(interrupt=interrupt)):
                x = euler(velocity, x, sigmas, on_step)
    finally:
        model.chunk_tokens = chunk
        full = streamer.streamed_bytes_per_pass()
        full *= 1 + (neg is not None)  # what a step streams without the cache
        dit.step_cache_report = dict(cache.summary() if cache else {"method": "off", "skipped": 0},
                                     bytes_per_step=per_step, bytes_per_full_step=full,
                                     bytes_not_streamed=max(0, full * len(per_step) - sum(per_step)))
    return x / SCALING_FACTOR


@contextlib.contextmanager
def cached_run(dit, cache: StepCache | None):
    """Hand a step-cache policy to the DiT for one run and wire it to the streamer: TeaCache's probe (the
    first double block's img_mod, copied to the device once), First-Block Cache's pause after that block
    (a skipped step copies nothing after it)."""
    model, streamer = dit.model, dit.streamer
    if cache is None:
        yield
        return
    first = model.cfg.depth_refiner  # the first double block, in the streamer's order
    if cache.needs_probe:
        model.first_block_modulation = first_block_modulation(dit, first)
    if cache.pauses_after_first_block:  # the cache calls the streamer's resume / end_pass once it decides
        streamer.pause_after(first)
    model.step_cache = cache
    try:
        yield
    finally:
        model.step_cache = model.first_block_modulation = None
        streamer.pause_after(None)


def first_block_modulation(dit, index: int):
    """A device copy of block `index`'s img_mod (its LoRA adapters shared), as a callable vec → chunks."""
    tensors = {n[len("img_mod."):]: t.to(dit.model.device)
               for n, t in dit.streamer.read_block(index).items() if n.startswith("img_mod.")}
    with torch.device("meta"):
        probe = Modulation(dit.model.cfg.hidden, 6)
    bind(probe, tensors)
    probe.linear.lora = dit.model.double_blocks[0].img_mod.linear.lora  # the run's LoRAs apply here too
    return lambda vec: probe(vec)


def fit_chunk(dit, x_shape: tuple, text: int) -> int | None:
    """On a GPU, the query chunk whose activations fit what the stage leaves for them (the budget or the
    free memory, minus the fixed weights and the smallest ring). Only changes anything where SDPA falls
    back to its math kernel (GPUs before sm80 in bf16/fp16): there a chunk's N×N scores dominate."""
    room = dit.streamer.activation_room()
    if room is None or dit.model.attention_kernel() != "math":
        return None
    return dit.model.choose_chunk(x_shape, text, room)



# -- the VAE stage's memory -----------------------------------------------------------------------------
def vae_stage_plan(vae, latent_shape: tuple, spec: TileSpec, what: str, available: int | None) -> tuple[TileSpec, int]:
    """(tiles with the automatic sizes resolved for `available` device bytes, bytes the stage needs:
    the VAE's weights plus one tile's peak). `available` None: the CPU, or the device's own free memory."""
    from .vae.planning import auto_tiles, tile_peak_bytes
    from .vae.tiling import check_tiles

    model = vae.model
    check_tiles(spec, model.cfg.space_compression, model.cfg.time_compression)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    budget = None if available is None else max(0, automatic_budget(available) - weights)
    resolved = auto_tiles(model, spec, tuple(latent_shape), budget, what)
    return resolved, weights + tile_peak_bytes(model, resolved, what)


# -- the other stages ------------------------------------------------------------------------------
def encode_prompt(text_encoder, prompt: str) -> list:
    """Prompt → native CONDITIONING (cached per prompt and encoder files)."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError("a non-empty prompt", repr(prompt), "describe the video you want")
    embeds = text_encoder.encode(prompt)
    check_finite(embeds.states, "the LLaVA-Llama-3 prompt states")
    check_finite(embeds.pooled, "the CLIP-L pooled prompt vector")
    return to_conditioning(embeds)


def encode_image_prompt(text_encoder, vision_path: str, image, prompt: str, interleave: int = 2) -> list:
    """HunyuanVideo-I2V's prompt: LLaVA's vision tower (loaded from `vision_path`, run once, freed) turns
    the start image into the template's image tokens; the Llama layers stream as for text alone."""
    from .loaders.vision_loader import load_vision
    from .models.llava_vision import clip_pixels

    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError("a non-empty prompt", repr(prompt), "describe the video you want")
    if not isinstance(interleave, int) or not 1 <= interleave <= 8:
        raise InputError("image_interleave from 1 to 8 (2: HunyuanVideo-I2V latent concat, 4: token replace)",
                         repr(interleave), "use 2 or 4")
    encoder = text_encoder.encoder
    vision = load_vision(vision_path, encoder.device, encoder.dtype)
    try:
        if vision.width != encoder.llama.hidden:
            raise InputError(f"a vision projector to the Llama width ({encoder.llama.hidden})",
                             f"one to {vision.width} in {vision_path}", "use the vision file of the same LLaVA model")
        with torch.no_grad():
            pixels = clip_pixels(image, vision.image_size).to(encoder.device, encoder.dtype)
            features = check_finite(vision(pixels), "the start image's vision features")
    finally:
        del vision  # the tower is needed once per image
    embeds = text_encoder.encode_with_image(prompt, features, interleave)
    check_finite(embeds.states, "the LLaVA-Llama-3 prompt states")
    cond = to_conditioning(embeds)
    cond[0][1]["hystream_image_interleave"] = interleave  # lets the sampler check it against the DiT
    return cond


def decode(vae, latent: torch.Tensor, spec: TileSpec = TileSpec(), hooks: Hooks | None = None) -> torch.Tensor:
    """Raw latents → IMAGE frames [B·F, H, W, 3] in [0, 1]."""
    check_finite(latent, "the latent to decode", "a sampler that failed numerically; " + CAUSES)
    return check_finite(vae_codec.decode(vae.model, latent, spec, hooks), "the decoded frames",
                        "a damaged VAE file (download it again) or fp16 VAE compute overflowing")


def crop_video(vae, frames) -> torch.Tensor:
    """IMAGE frames cut to what the VAE encodes (4k+1 frames, sides multiples of 16), with a warning
    saying what was cut; done once before the stage so its memory is planned for the real size."""
    from .vae.tiling import crop_for_encode

    if not torch.is_tensor(frames) or frames.dim() != 4 or frames.shape[-1] != 3:
        raise InputError("IMAGE frames [F, H, W, 3]", f"{getattr(frames, 'shape', type(frames).__name__)}",
                         "connect video frames, e.g. from HyStreamLoadVideo")
    return crop_for_encode(frames, vae.cfg.time_compression, 2 * vae.cfg.space_compression)


def encode_video(vae, frames: torch.Tensor, spec: TileSpec = TileSpec(), hooks: Hooks | None = None) -> torch.Tensor:
    """IMAGE frames → raw latents (posterior mean), cropped to 4k+1 frames and sides multiple of 16."""
    check_finite(frames, "the input frames", "an input video that did not decode correctly")
    return check_finite(vae_codec.encode(vae.model, frames, spec, crop=True, hooks=hooks), "the encoded latents",
                        "a damaged VAE file (download it again) or fp16 VAE compute overflowing")


# -- image-to-video -------------------------------------------------------------------------------------
def fit_image(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """The first IMAGE frame [1, height, width, 3]: center-cropped to the video's aspect ratio, then
    resized (bilinear, antialiased), with a warning saying what was cut. Same size: untouched."""
    if not torch.is_tensor(image) or image.dim() != 4 or image.shape[-1] < 3:
        raise InputError("a start IMAGE [N, H, W, 3]", f"{getattr(image, 'shape', type(image).__name__)}",
                         "connect a LoadImage output (or any IMAGE) as start_image")
    frame = image[:1, :, :, :3].float()
    h0, w0 = frame.shape[1], frame.shape[2]
    if (h0, w0) == (height, width):
        return frame
    scale = max(width / w0, height / h0)
    crop_w, crop_h = min(w0, round(width / scale)), min(h0, round(height / scale))
    top, left = (h0 - crop_h) // 2, (w0 - crop_w) // 2
    if (crop_w, crop_h) != (w0, h0):
        log.warning("HyStream: the start image (%dx%d) was cropped to %dx%d (from x=%d, y=%d) to match the video's "
                    "aspect ratio, then resized to %dx%d", w0, h0, crop_w, crop_h, left, top, width, height)
    frame = frame[:, top:top + crop_h, left:left + crop_w].permute(0, 3, 1, 2)
    frame = torch.nn.functional.interpolate(frame, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return frame.permute(0, 2, 3, 1).clamp(0, 1)


def encode_start_image(vae, image: torch.Tensor, width: int, height: int, spec: TileSpec = TileSpec(),
                       hooks: Hooks | None = None) -> torch.Tensor:
    """A start IMAGE → its raw latent [1, 16, 1, height/8, width/8] (posterior mean, as the reference
    HunyuanVideo-I2V pipeline and ComfyUI's node encode it)."""
    check_video_size(width, height, 1)
    frame = check_finite(fit_image(image, width, height), "the start image", "an image that did not load correctly")
    return check_finite(vae_codec.encode(vae.model, frame, spec, crop=False, hooks=hooks), "the start image's latent",
                        "a damaged VAE file (download it again) or fp16 VAE compute overflowing")


def with_start_image(conditioning, image_latent: torch.Tensor, frames: int) -> list:
    """CONDITIONING with the start image attached as ComfyUI's HunyuanImageToVideo "v1 (concat)" does
    (`concat_latent_image`, `concat_mask` 0 on the image's latent frame), which the sampler reads for every
    I2V variant. Entries are copied, never changed in place (ComfyUI caches node outputs)."""
    if not isinstance(conditioning, (list, tuple)) or not conditioning:
        raise InputError("a CONDITIONING", type(conditioning).__name__, "connect HyStreamTextEncode's output")
    t = (frames - 1) // 4 + 1
    mask = torch.ones(1, 1, t, image_latent.shape[3], image_latent.shape[4])
    mask[:, :, :1] = 0
    out = []
    for entry in conditioning:
        extra = dict(entry[1]) if len(entry) > 1 and isinstance(entry[1], dict) else {}
        extra.update(concat_latent_image=image_latent, concat_mask=mask)
        out.append([entry[0], extra])
    return out


def dropped_frames(dit) -> int:
    """Decoded frames the reference drops after sampling with this DiT (HunyuanVideo-I2V latent concat)."""
    return i2v.DROPPED_FRAMES if dit.model.cfg.image_condition == "latent_concat" else 0
