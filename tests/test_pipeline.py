"""End to end: HyStream's headless stages (text encode → sample → decode) against diffusers'
HunyuanVideoPipeline on the same tiny random components, saved in real layouts; streamed == resident;
true CFG; video-to-video."""

import dataclasses

import pytest
import torch

from hystream import pipeline
from hystream.errors import InputError
from hystream.families.hunyuan_video.prompt import VIDEO_TEMPLATE
from hystream.families.hunyuan_video.vae import SCALING_FACTOR
from hystream.loading import load_dit, load_text_encoder, load_vae
from hystream.pipeline import SampleSettings
from tiny_dit import TINY, diffusers_model, save_layout, tencent_state_dict
from tiny_text import save_clip, save_llama, user_start
from tiny_vae import reference_vae, save_vae

PROMPT = "A cat walks on the grass, realistic style."
NEGATIVE = "blurry, low quality"
CFG = dataclasses.replace(TINY, text_dim=512, pooled_dim=128)  # widths of the tiny Llama and CLIP
HEIGHT, WIDTH, FRAMES = 32, 48, 9


@pytest.fixture(scope="module")
def world(tmp_path_factory, text_models):
    from diffusers import FlowMatchEulerDiscreteScheduler, HunyuanVideoPipeline

    root = tmp_path_factory.mktemp("e2e")
    tok, llama_tok, clip_tok, llama, clip = text_models
    dit_sd = tencent_state_dict(CFG, seed=5)
    vae_ref = reference_vae()
    files = {
        "dit": save_layout(dit_sd, "comfy", str(root / "dit"), CFG)[0],
        "llm": save_llama(llama, "comfy_fp16", str(root / "llm"), tok)[0],
        "clip": save_clip(clip, "clip_l", str(root / "clip")),
        "vae": save_vae(vae_ref, "comfy", str(root / "vae")),
    }
    pipe = HunyuanVideoPipeline(text_encoder=llama, tokenizer=llama_tok, transformer=diffusers_model(dit_sd, CFG),
                                vae=vae_ref, scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
                                text_encoder_2=clip, tokenizer_2=clip_tok)
    vae_ref.use_framewise_decoding = False
    te = load_text_encoder(files["llm"], files["clip"], tokenizer_dir=tok)
    yield {"files": files, "pipe": pipe, "tok": tok, "llama_tok": llama_tok, "te": te, "dit_sd": dit_sd}
    te.close()


def reference(world, seed, steps, shift=7.0, guidance=6.0, negative=None, cfg=1.0, latents=None, sigmas=None,
              output="latent"):
    pipe = world["pipe"]
    pipe.scheduler = pipe.scheduler.__class__(shift=shift)
    template = {"template": VIDEO_TEMPLATE, "crop_start": user_start(world["llama_tok"], PROMPT)}
    kwargs = {"negative_prompt": negative, "true_cfg_scale": cfg} if negative else {}
    if negative:
        assert user_start(world["llama_tok"], negative) == template["crop_start"]
    with torch.no_grad():
        return pipe(PROMPT, height=HEIGHT, width=WIDTH, num_frames=FRAMES, num_inference_steps=steps,
                    guidance_scale=guidance, generator=torch.Generator("cpu").manual_seed(seed), output_type=output,
                    prompt_template=template, max_sequence_length=256, latents=latents, sigmas=sigmas,
                    return_dict=False, **kwargs)[0]


def ours(world, settings, resident=None, negative=None, latent=None, prefetch=1):
    dit = load_dit(world["files"]["dit"], resident_blocks=resident, prefetch_blocks=prefetch)
    try:
        positive = pipeline.encode_prompt(world["te"], PROMPT)
        neg = pipeline.encode_prompt(world["te"], negative) if negative else None
        if latent is None:
            latent = pipeline.empty_latent(WIDTH, HEIGHT, FRAMES)
        steps_run = []
        out = pipeline.sample(dit, positive, latent, settings, negative=neg, on_step=lambda s: steps_run.append(s.index))
        return out, steps_run, dit.stats.as_dict()
    finally:
        dit.close()


def test_text_to_video_matches_diffusers(world):
    settings = SampleSettings(seed=42, steps=4, flow_shift=7.0, embedded_guidance=6.0)
    want = reference(world, 42, 4)  # model-space latents
    got, steps_run, _ = ours(world, settings)
    assert steps_run == [0, 1, 2, 3]
    assert got.shape == want.shape == (1, 16, 3, 4, 6)
    assert (got * SCALING_FACTOR - want).abs().max().item() <= 1e-4
    assert want.abs().max().item() > 0.5

    frames_want = reference(world, 42, 4, output="pt")[0].permute(0, 2, 3, 1)  # [F, H, W, C] in [0, 1]
    vae = load_vae(world["files"]["vae"])
    frames = pipeline.decode(vae, got)
    assert frames.shape == (FRAMES, HEIGHT, WIDTH, 3)
    assert (frames - frames_want).abs().max().item() <= 1e-3


def test_streamed_and_resident_runs_are_bit_identical(world):
    settings = SampleSettings(seed=7, steps=3)
    streamed, _, stats = ours(world, settings, prefetch=2)
    resident, _, rstats = ours(world, settings, resident="all")
    assert stats["copies"] >= 3 * (TINY.streamed_blocks) and rstats["copies"] == 0
    assert torch.equal(streamed, resident)


def test_true_cfg_with_negative_prompt_matches_diffusers(world):
    settings = SampleSettings(seed=3, steps=3, cfg=5.0)
    want = reference(world, 3, 3, negative=NEGATIVE, cfg=5.0)
    got, _, _ = ours(world, settings, negative=NEGATIVE)
    assert (got * SCALING_FACTOR - want).abs().max().item() <= 1e-4


def test_video_to_video(world):
    g = torch.Generator().manual_seed(9)
    source = torch.randn(1, 16, 3, 4, 6, generator=g)  # raw latents of an "input video"
    same, steps_run, _ = ours(world, SampleSettings(seed=1, steps=6, denoise=0.0), latent=source)
    assert torch.equal(same, source) and steps_run == []

    settings = SampleSettings(seed=1, steps=6, denoise=0.5)
    got, steps_run, stats = ours(world, settings, latent=source)
    assert len(steps_run) == 3 and stats["forwards"] == 3  # half the steps
    # diffusers started from the same sigma: the last 3 of 6 (unshifted) sigmas, the same noised latents
    import numpy as np

    from hystream.sampling.euler import noise, noised
    from hystream.sampling.schedule import shifted_sigmas

    sigma0 = shifted_sigmas(6, 7.0)[3]
    start = noised(source * SCALING_FACTOR, noise(tuple(source.shape), 1), sigma0)
    want = reference(world, 1, 3, latents=start, sigmas=list(np.linspace(1.0, 0.0, 7)[:-1][3:]))
    assert (got * SCALING_FACTOR - want).abs().max().item() <= 1e-4


def test_native_conditioning_without_mask_or_padding(world):
    """ComfyUI's own text encoder gives unpadded states and may omit the mask: same result."""
    positive = pipeline.encode_prompt(world["te"], PROMPT)
    native = [[positive[0][0].clone(), {"pooled_output": positive[0][1]["pooled_output"]}]]
    padded = [[torch.cat([positive[0][0], torch.randn(1, 5, positive[0][0].shape[-1])], 1),
               {"pooled_output": positive[0][1]["pooled_output"],
                "attention_mask": torch.cat([positive[0][1]["attention_mask"], torch.zeros(1, 5, dtype=torch.long)], 1)}]]
    dit = load_dit(world["files"]["dit"])
    try:
        latent = pipeline.empty_latent(WIDTH, HEIGHT, FRAMES)
        outs = [pipeline.sample(dit, c, latent, SampleSettings(seed=2, steps=2)) for c in (positive, native, padded)]
    finally:
        dit.close()
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_bad_sizes_and_conditioning_fail_before_model_work(world):
    for w, h, f in [(500, 480, 61), (848, 480, 60), (8, 480, 61)]:
        with pytest.raises(InputError, match="multiples of 16 and a frame count of 4k\\+1"):
            pipeline.empty_latent(w, h, f)
    dit = load_dit(world["files"]["dit"])
    try:
        positive = pipeline.encode_prompt(world["te"], PROMPT)
        with pytest.raises(InputError, match="pixel width and height are multiples of 16"):
            pipeline.sample(dit, positive, torch.zeros(1, 16, 3, 5, 6))
        with pytest.raises(InputError, match="pooled_output"):
            pipeline.sample(dit, [[positive[0][0], {}]], pipeline.empty_latent(WIDTH, HEIGHT, FRAMES))
        with pytest.raises(InputError, match="negative CONDITIONING"):
            pipeline.sample(dit, positive, pipeline.empty_latent(WIDTH, HEIGHT, FRAMES), SampleSettings(cfg=4.0))
        assert dit.stats.copies == 0
    finally:
        dit.close()


def test_interrupt_between_blocks_releases_the_ring(world):
    dit = load_dit(world["files"]["dit"], prefetch_blocks=2)
    calls = []

    def interrupt():
        calls.append(1)
        if len(calls) == 5:
            raise InterruptedError("cancelled")
    try:
        positive = pipeline.encode_prompt(world["te"], PROMPT)
        with pytest.raises(InterruptedError):
            pipeline.sample(dit, positive, pipeline.empty_latent(WIDTH, HEIGHT, FRAMES), SampleSettings(steps=3),
                            interrupt=interrupt)
        assert dit.streamer.live_buffers() == []
        out = pipeline.sample(dit, positive, pipeline.empty_latent(WIDTH, HEIGHT, FRAMES), SampleSettings(steps=1))
        assert torch.isfinite(out).all() and len(calls) == 5  # the run's interrupt check went with its run
    finally:
        dit.close()
