"""End to end for HunyuanVideo 1.5: HyStream's headless stages (text encode → sample → decode) against
diffusers' HunyuanVideo15Pipeline on the same tiny random components saved in the real layouts (the real
Qwen2.5 and ByT5 tokenizers ComfyUI ships); streamed == resident; video-to-video; an empty negative prompt."""

import os

import numpy as np
import pytest
import torch

from hystream import pipeline
from hystream.families.hunyuan_video_15.demo import TINY_DIT
from hystream.families.hunyuan_video_15.demo_text import byt5_model, qwen_model, write_byt5, write_qwen
from hystream.families.hunyuan_video_15.demo_vae import write_vae
from hystream.families.hunyuan_video_15.family import SCALING_FACTOR
from hystream.loading import load_dit, load_text_encoder, load_vae
from hystream.pipeline import SampleSettings
from tiny_dit15 import diffusers_model, save_layout, tencent_state_dict

PROMPT = 'A cat walks on the grass under a sign that reads "HELLO", realistic style.'
NEGATIVE = "blurry, low quality"
HEIGHT, WIDTH, FRAMES = 48, 64, 9  # latents [1, 32, 3, 3, 4]


@pytest.fixture(scope="module")
def world(tmp_path_factory, comfy_snapshot):
    from diffusers import AutoencoderKLHunyuanVideo15, FlowMatchEulerDiscreteScheduler, HunyuanVideo15Pipeline
    from diffusers.guiders import ClassifierFreeGuidance
    from transformers import ByT5Tokenizer, Qwen2Tokenizer

    bundled = os.path.join(comfy_snapshot, "comfy", "text_encoders")
    qwen_dir, byt5_dir = os.path.join(bundled, "qwen25_tokenizer"), os.path.join(bundled, "byt5_tokenizer")
    if not os.path.isdir(qwen_dir):
        pytest.skip(f"the ComfyUI at {comfy_snapshot} ships no qwen25_tokenizer")
    root = tmp_path_factory.mktemp("e2e15")
    qwen, byt5 = qwen_model(seed=3), byt5_model(seed=4)
    dit_sd = {k: v.half().float() for k, v in tencent_state_dict(TINY_DIT, seed=5).items()}  # as the fp16 file holds
    files = {"dit": save_layout(dit_sd, "comfy", str(root / "dit"), TINY_DIT),
             "llm": write_qwen(qwen, "comfy_fp16", str(root / "te"), qwen_dir)[0],
             "clip": write_byt5(byt5, "comfy", str(root / "te"), byt5_dir),
             "vae": write_vae(str(root / "vae"), "comfy", dtype=torch.float32, residual_scale=0.5, seed=6),
             "vae_ref": write_vae(str(root / "vae_ref"), "diffusers", dtype=torch.float32, residual_scale=0.5, seed=6)}
    vae_ref = AutoencoderKLHunyuanVideo15.from_pretrained(files["vae_ref"], subfolder="vae").eval()
    pipe = HunyuanVideo15Pipeline(text_encoder=qwen, tokenizer=Qwen2Tokenizer.from_pretrained(qwen_dir),
                                  transformer=diffusers_model(dit_sd, TINY_DIT), vae=vae_ref,
                                  scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0), text_encoder_2=byt5,
                                  tokenizer_2=ByT5Tokenizer.from_pretrained(byt5_dir),
                                  guider=ClassifierFreeGuidance(guidance_scale=6.0))
    te = load_text_encoder(files["llm"], files["clip"], host_tokenizer_dirs={"qwen25": qwen_dir, "byt5": byt5_dir})
    yield {"files": files, "pipe": pipe, "te": te}
    te.close()


def reference(world, seed, steps, *, shift=5.0, cfg=6.0, negative=None, latents=None, sigmas=None, output="latent"):
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.guiders import ClassifierFreeGuidance

    pipe = world["pipe"]
    pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    pipe.guider = ClassifierFreeGuidance(guidance_scale=cfg)
    with torch.no_grad():
        return pipe(PROMPT, negative_prompt=negative, height=HEIGHT, width=WIDTH, num_frames=FRAMES,
                    num_inference_steps=steps, generator=torch.Generator("cpu").manual_seed(seed), latents=latents,
                    sigmas=sigmas, output_type=output, return_dict=False)[0]


def ours(world, settings, *, negative="", resident=None, latent=None, prefetch=1):
    dit = load_dit(world["files"]["dit"], resident_blocks=resident, prefetch_blocks=prefetch)
    try:
        with torch.inference_mode():
            positive = pipeline.encode_prompt(world["te"], PROMPT)
            neg = pipeline.encode_prompt(world["te"], negative) if settings.cfg > 1 else None
            if latent is None:
                latent = pipeline.empty_latent(WIDTH, HEIGHT, FRAMES, family=dit.family)
            steps_run = []
            out = pipeline.sample(dit, positive, latent, settings, negative=neg,
                                  on_step=lambda s: steps_run.append(s.index))
        return out, steps_run, dit.stats.as_dict()
    finally:
        dit.close()


def settings(seed, steps, cfg=6.0, **kw):
    return SampleSettings(seed=seed, steps=steps, flow_shift=5.0, embedded_guidance=None, cfg=cfg, **kw)


def test_text_to_video_with_cfg_matches_diffusers(world):
    """cfg 6 with the reference's default negative prompt (none: an empty one), latents and decoded frames."""
    want = reference(world, 42, 3)
    got, steps_run, _ = ours(world, settings(42, 3))
    assert steps_run == [0, 1, 2]
    assert got.shape == want.shape == (1, 32, 3, 3, 4)
    assert want.abs().max().item() > 0.5
    assert (got * SCALING_FACTOR - want).abs().max().item() <= 1e-4

    frames_want = reference(world, 42, 3, output="pt")[0].permute(0, 2, 3, 1)  # [F, H, W, C] in [0, 1]
    vae = load_vae(world["files"]["vae"])
    with torch.inference_mode():
        frames = pipeline.decode(vae, got)
    assert frames.shape == (FRAMES, HEIGHT, WIDTH, 3)
    assert (frames - frames_want).abs().max().item() <= 1e-3


def test_negative_prompt_and_distilled_cfg_1_match_diffusers(world):
    want = reference(world, 3, 2, negative=NEGATIVE, cfg=4.0)
    got, _, _ = ours(world, settings(3, 2, cfg=4.0), negative=NEGATIVE)
    assert (got * SCALING_FACTOR - want).abs().max().item() <= 1e-4
    want = reference(world, 8, 2, cfg=1.0, shift=7.0)  # the distilled models: no guidance, one pass a step
    got, _, stats = ours(world, SampleSettings(seed=8, steps=2, flow_shift=7.0, embedded_guidance=None, cfg=1.0))
    assert stats["forwards"] == 2
    assert (got * SCALING_FACTOR - want).abs().max().item() <= 1e-4


def test_streamed_and_resident_runs_are_bit_identical(world):
    streamed, _, stats = ours(world, settings(7, 2), prefetch=2)
    resident, _, rstats = ours(world, settings(7, 2), resident="all")
    assert stats["copies"] >= 2 * 2 * TINY_DIT.streamed_blocks and rstats["copies"] == 0
    assert torch.equal(streamed, resident)


def test_video_to_video_matches_diffusers_from_the_same_sigma(world):
    from hystream.sampling.euler import noise, noised
    from hystream.sampling.schedule import shifted_sigmas

    source = torch.randn(1, 32, 3, 3, 4, generator=torch.Generator().manual_seed(9))  # raw latents of a video
    same, steps_run, _ = ours(world, settings(1, 4, denoise=0.0), latent=source)
    assert torch.equal(same, source) and steps_run == []
    got, steps_run, _ = ours(world, settings(1, 4, denoise=0.5), latent=source)
    assert len(steps_run) == 2
    start = noised(source * SCALING_FACTOR, noise(tuple(source.shape), 1), shifted_sigmas(4, 5.0)[2])
    want = reference(world, 1, 2, latents=start, sigmas=list(np.linspace(1.0, 0.0, 5)[:-1][2:]))
    assert (got * SCALING_FACTOR - want).abs().max().item() <= 1e-4


# -- image-to-video ------------------------------------------------------------------------------------------
SIDE = 48  # a square video: latents [1, 32, 3, 3, 3]
def smooth_rgb(height, width, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:height, :width] / max(height, width)
    waves = [np.sin(5 * x * (c + 1) + 4 * y + rng.uniform(0, 6)) for c in range(3)]
    return np.clip(np.stack(waves, -1) * 110 + 128, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def i2v(world, tmp_path_factory):
    from diffusers import HunyuanVideo15ImageToVideoPipeline
    from transformers import SiglipImageProcessor

    from hystream.families.hunyuan_video_15.demo_vision import tiny_siglip, write_comfy_siglip

    # SigLIP's square input the size of the (square) video: its 8-bit resize is then a copy in PIL and in
    # HyStream alike (elsewhere they differ by one level on a few pixels: test_vision15)
    size = SIDE
    siglip = tiny_siglip(seed=2, image_size=size, patch_size=16)
    extractor = SiglipImageProcessor(size={"height": size, "width": size}, resample=3, do_rescale=True,
                                     rescale_factor=1 / 255, do_normalize=True, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    p = world["pipe"]
    pipe = HunyuanVideo15ImageToVideoPipeline(text_encoder=p.text_encoder, tokenizer=p.tokenizer, transformer=p.transformer,
                                              vae=p.vae, scheduler=p.scheduler, text_encoder_2=p.text_encoder_2,
                                              tokenizer_2=p.tokenizer_2, guider=p.guider, image_encoder=siglip,
                                              feature_extractor=extractor)
    pipe.target_size = SIDE  # its size buckets then hold SIDE²: the video size is the image's
    vision = write_comfy_siglip(siglip, str(tmp_path_factory.mktemp("clip_vision")), dtype=torch.float32)
    return {"pipe": pipe, "vision": vision}


def test_image_to_video_matches_diffusers(world, i2v):
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.guiders import ClassifierFreeGuidance
    from PIL import Image

    rgb = smooth_rgb(SIDE, SIDE, seed=11)
    pipe = i2v["pipe"]
    pipe.scheduler, pipe.guider = FlowMatchEulerDiscreteScheduler(shift=5.0), ClassifierFreeGuidance(guidance_scale=6.0)
    with torch.no_grad():
        want = pipe(image=Image.fromarray(rgb), prompt=PROMPT, num_frames=FRAMES, num_inference_steps=3,
                    generator=torch.Generator("cpu").manual_seed(21), output_type="latent", return_dict=False)[0]
    image = torch.from_numpy(rgb).float()[None] / 255
    dit = load_dit(world["files"]["dit"])
    vae = load_vae(world["files"]["vae"])
    try:
        with torch.inference_mode():
            family = dit.family
            states = family.start_image_states(i2v["vision"], image, SIDE, SIDE)
            latent_image = pipeline.encode_start_image(vae, image, SIDE, SIDE)
            positive = pipeline.with_start_image(pipeline.encode_prompt(world["te"], PROMPT), latent_image, FRAMES,
                                                 family, states)
            negative = pipeline.with_start_image(pipeline.encode_prompt(world["te"], ""), latent_image, FRAMES,
                                                 family, states)
            got = pipeline.sample(dit, positive, pipeline.empty_latent(SIDE, SIDE, FRAMES, family=family),
                                  settings(21, 3), negative=negative)
    finally:
        dit.close()
    assert got.shape == want.shape == (1, 32, 3, 3, 3)
    assert (got * SCALING_FACTOR - want).abs().max().item() <= 1e-4
    # without the SigLIP states the run differs: they reach the DiT
    with torch.inference_mode():
        plain = pipeline.with_start_image(pipeline.encode_prompt(world["te"], PROMPT), latent_image, FRAMES, family)
        dit = load_dit(world["files"]["dit"])
        try:
            other = pipeline.sample(dit, plain, pipeline.empty_latent(SIDE, SIDE, FRAMES, family=family),
                                    settings(21, 3), negative=pipeline.with_start_image(
                                        pipeline.encode_prompt(world["te"], ""), latent_image, FRAMES, family))
        finally:
            dit.close()
    assert (other * SCALING_FACTOR - want).abs().max().item() > 1e-2
