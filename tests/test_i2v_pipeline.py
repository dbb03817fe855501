"""Image-to-video end to end against diffusers: HunyuanVideo-I2V (latent concat and token replace, with
the same prompt embeds given to both; also with true CFG and a negative prompt) and SkyReels-I2V (prompt
encoded by each side) — latents ≤ 1e-4 and frames ≤ 1e-3 (fp32); streamed == resident; an I2V DiT without
a start image, a start image of the wrong size and a foreign start-image latent are clear errors."""

import dataclasses

import numpy as np
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
CFG = dataclasses.replace(TINY, text_dim=512, pooled_dim=128)
HEIGHT, WIDTH, FRAMES = 32, 48, 9
VARIANTS = {"latent_concat": 33, "token_replace": 16, "skyreels": 32}


@pytest.fixture(scope="module")
def world(tmp_path_factory, text_models):
    root = tmp_path_factory.mktemp("i2v")
    tok, llama_tok, clip_tok, llama, clip = text_models
    vae_ref = reference_vae()
    vae_ref.use_framewise_decoding = False
    files = {"llm": save_llama(llama, "comfy_fp16", str(root / "llm"), tok)[0],
             "clip": save_clip(clip, "clip_l", str(root / "clip")),
             "vae": save_vae(vae_ref, "comfy", str(root / "vae"))}
    sds = {}
    for name, channels in VARIANTS.items():
        cfg = dataclasses.replace(CFG, in_channels=channels)
        sds[name] = (cfg, tencent_state_dict(cfg, seed=11))
        files[name] = save_layout(sds[name][1], "comfy", str(root / name), cfg)[0]
    rgb = np.random.default_rng(0).integers(0, 256, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
    te = load_text_encoder(files["llm"], files["clip"], tokenizer_dir=tok)
    vae = load_vae(files["vae"])
    yield {"files": files, "sds": sds, "rgb": rgb, "image": torch.from_numpy(rgb).float()[None] / 255, "te": te,
           "vae": vae, "llama": llama, "clip": clip, "llama_tok": llama_tok, "clip_tok": clip_tok, "vae_ref": vae_ref}
    te.close()


def i2v_pipe(world, name):
    from diffusers import FlowMatchEulerDiscreteScheduler, HunyuanVideoImageToVideoPipeline

    cfg, sd = world["sds"][name]
    return HunyuanVideoImageToVideoPipeline(
        text_encoder=None, tokenizer=world["llama_tok"], transformer=diffusers_model(sd, cfg, name),
        vae=world["vae_ref"], scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), text_encoder_2=world["clip"],
        tokenizer_2=world["clip_tok"], image_processor=None)


def ours(world, name, seed, steps, resident=None, prefetch=1, positive=None, cfg=1.0, negative=None):
    dit = load_dit(world["files"][name], resident_blocks=resident, prefetch_blocks=prefetch)
    try:
        positive = positive or pipeline.encode_prompt(world["te"], PROMPT)
        latent_image = pipeline.encode_start_image(world["vae"], world["image"], WIDTH, HEIGHT)
        pos = pipeline.with_start_image(positive, latent_image, FRAMES)
        neg = pipeline.with_start_image(negative, latent_image, FRAMES) if negative else None
        out = pipeline.sample(dit, pos, pipeline.empty_latent(WIDTH, HEIGHT, FRAMES),
                              SampleSettings(seed=seed, steps=steps, embedded_guidance=6.0, cfg=cfg), negative=neg)
        return out, pipeline.dropped_frames(dit)
    finally:
        dit.close()


@pytest.mark.parametrize("name", ["latent_concat", "token_replace"])
def test_hunyuan_video_i2v_matches_diffusers(world, name):
    from PIL import Image

    positive = pipeline.encode_prompt(world["te"], PROMPT)
    states, extra = positive[0]
    pipe = i2v_pipe(world, name)
    kwargs = {"image": Image.fromarray(world["rgb"]), "prompt_embeds": states,
              "pooled_prompt_embeds": extra["pooled_output"], "prompt_attention_mask": extra["attention_mask"],
              "height": HEIGHT, "width": WIDTH, "num_frames": FRAMES, "num_inference_steps": 3, "guidance_scale": 6.0,
              "return_dict": False}
    with torch.no_grad():
        want = pipe(generator=torch.Generator().manual_seed(5), output_type="latent", **kwargs)[0]
        frames_want = pipe(generator=torch.Generator().manual_seed(5), output_type="pt", **kwargs)[0][0]
    got, drop = ours(world, name, 5, 3, positive=positive)
    assert drop == (4 if name == "latent_concat" else 0)
    got_model = got * SCALING_FACTOR
    if name == "latent_concat":  # the reference returns the frames after the image's
        got_model = got_model[:, :, 1:]
    else:  # token replace keeps the clean image latent as frame 0
        image_latent = pipeline.encode_start_image(world["vae"], world["image"], WIDTH, HEIGHT) * SCALING_FACTOR
        assert torch.equal(got_model[:, :, :1], image_latent)
    assert got_model.shape == want.shape and want.abs().max() > 0.5
    assert (got_model - want).abs().max().item() <= 1e-4
    frames = pipeline.decode(world["vae"], got)[drop:]
    frames_want = frames_want.permute(0, 2, 3, 1)
    assert frames.shape == frames_want.shape == (FRAMES - drop, HEIGHT, WIDTH, 3)
    assert (frames - frames_want).abs().max().item() <= 1e-3


def test_skyreels_i2v_matches_diffusers(world, monkeypatch):
    """SkyReels encodes the prompt as T2V does (both sides encode it here). The reference samples the start
    image's posterior; ComfyUI's node and HyStream take its mean, so the reference is run with the mean."""
    from diffusers import FlowMatchEulerDiscreteScheduler, HunyuanSkyreelsImageToVideoPipeline
    from diffusers.pipelines.hunyuan_video import pipeline_hunyuan_skyreels_image2video as sky
    from PIL import Image

    monkeypatch.setattr(sky, "retrieve_latents", lambda out, generator=None: out.latent_dist.mode())
    cfg, sd = world["sds"]["skyreels"]
    pipe = HunyuanSkyreelsImageToVideoPipeline(
        text_encoder=world["llama"], tokenizer=world["llama_tok"], transformer=diffusers_model(sd, cfg),
        vae=world["vae_ref"], scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), text_encoder_2=world["clip"],
        tokenizer_2=world["clip_tok"])
    template = {"template": VIDEO_TEMPLATE, "crop_start": user_start(world["llama_tok"], PROMPT)}
    kwargs = {"image": Image.fromarray(world["rgb"]), "prompt": PROMPT, "height": HEIGHT, "width": WIDTH,
              "num_frames": FRAMES, "num_inference_steps": 3, "guidance_scale": 6.0, "true_cfg_scale": 1.0,
              "prompt_template": template, "max_sequence_length": 256, "return_dict": False}
    with torch.no_grad():
        want = pipe(generator=torch.Generator().manual_seed(9), output_type="latent", **kwargs)[0]
        frames_want = pipe(generator=torch.Generator().manual_seed(9), output_type="pt", **kwargs)[0][0]
    got, drop = ours(world, "skyreels", 9, 3)
    assert drop == 0 and want.abs().max() > 0.5
    assert (got * SCALING_FACTOR - want).abs().max().item() <= 1e-4
    frames = pipeline.decode(world["vae"], got)
    assert (frames - frames_want.permute(0, 2, 3, 1)).abs().max().item() <= 1e-3


@pytest.mark.parametrize("name", list(VARIANTS))
def test_streamed_and_resident_are_bit_identical(world, name):
    streamed, _ = ours(world, name, 3, 2, prefetch=2)
    resident, _ = ours(world, name, 3, 2, resident="all")
    assert torch.equal(streamed, resident)


@pytest.mark.parametrize("name", ["latent_concat", "token_replace"])
def test_true_cfg_uses_the_start_image_on_both_passes(world, name):
    """True CFG (cfg 4, a negative prompt) against diffusers' true_cfg_scale: its negative pass sees the
    same start image (concat channels / clean frame-0 tokens) as the positive one, and so must ours."""
    from PIL import Image

    positive = pipeline.encode_prompt(world["te"], PROMPT)
    negative = pipeline.encode_prompt(world["te"], "blurry, static")
    (states, extra), (neg_states, neg_extra) = positive[0], negative[0]
    with torch.no_grad():
        want = i2v_pipe(world, name)(
            image=Image.fromarray(world["rgb"]), prompt_embeds=states, pooled_prompt_embeds=extra["pooled_output"],
            prompt_attention_mask=extra["attention_mask"], negative_prompt_embeds=neg_states,
            negative_pooled_prompt_embeds=neg_extra["pooled_output"],
            negative_prompt_attention_mask=neg_extra["attention_mask"], true_cfg_scale=4.0, height=HEIGHT,
            width=WIDTH, num_frames=FRAMES, num_inference_steps=2, guidance_scale=6.0,
            generator=torch.Generator().manual_seed(1), output_type="latent", return_dict=False)[0]
    got, _ = ours(world, name, 1, 2, positive=positive, cfg=4.0, negative=negative)
    got_model = got * SCALING_FACTOR
    if name == "latent_concat":  # the reference returns the frames after the image's
        got_model = got_model[:, :, 1:]
    assert got_model.shape == want.shape and want.abs().max() > 0.5
    assert (got_model - want).abs().max().item() <= 1e-4


@pytest.mark.parametrize("name", ["latent_concat", "skyreels"])
def test_i2v_dit_without_a_start_image(world, name):
    dit = load_dit(world["files"][name])
    try:
        with pytest.raises(InputError) as info:
            pipeline.sample(dit, pipeline.encode_prompt(world["te"], PROMPT), pipeline.empty_latent(WIDTH, HEIGHT, FRAMES),
                            SampleSettings(steps=1))
    finally:
        dit.close()
    assert "start image" in str(info.value) and "HyStreamImageToVideo" in str(info.value)


def test_start_image_of_another_size_and_foreign_latents(world):
    dit = load_dit(world["files"]["latent_concat"])
    positive = pipeline.encode_prompt(world["te"], PROMPT)
    latent = pipeline.empty_latent(WIDTH, HEIGHT, FRAMES)
    try:
        small = pipeline.encode_start_image(world["vae"], world["image"][:, :16, :16], 16, 16)
        with pytest.raises(InputError) as info:
            pipeline.sample(dit, pipeline.with_start_image(positive, small, FRAMES), latent, SampleSettings(steps=1))
        assert "48×32" in str(info.value) and "16×16" in str(info.value)
        with pytest.raises(InputError) as info:
            pipeline.sample(dit, pipeline.with_start_image(positive, torch.zeros(1, 4, 1, 4, 6), FRAMES), latent,
                            SampleSettings(steps=1))
        assert "start-image latent" in str(info.value)
    finally:
        dit.close()


def test_fit_image_crops_to_the_aspect_and_says_so(caplog):
    image = torch.rand(2, 60, 100, 3)
    out = pipeline.fit_image(image, 48, 32)
    assert out.shape == (1, 32, 48, 3)
    assert "cropped to 90x60" in caplog.text
    same = pipeline.fit_image(image[:, :32, :48], 48, 32)
    assert torch.equal(same, image[:1, :32, :48])


def test_lora_and_video_to_video_on_an_i2v_dit(world, tmp_path):
    """LoRA (the T2V key formats apply: same block names) and denoise < 1 keep working on an I2V DiT."""
    from hystream.loaders.lora import load_lora
    from test_lora import random_lora, write

    positive = pipeline.encode_prompt(world["te"], PROMPT)
    latent_image = pipeline.encode_start_image(world["vae"], world["image"], WIDTH, HEIGHT)
    pos = pipeline.with_start_image(positive, latent_image, FRAMES)
    source = pipeline.encode_video(world["vae"], torch.rand(FRAMES, HEIGHT, WIDTH, 3))
    lora_path = write(random_lora(), "comfy", tmp_path / "i2v_lora.safetensors")
    dit = load_dit(world["files"]["latent_concat"])
    try:
        v2v = pipeline.sample(dit, pos, source, SampleSettings(seed=2, steps=4, denoise=0.3))
        full = pipeline.sample(dit, pos, source, SampleSettings(seed=2, steps=4, denoise=1.0))
        with_lora = pipeline.sample(dit, pos, source, SampleSettings(seed=2, steps=4, denoise=0.3),
                                    loras=((load_lora(lora_path, dit.model), 1.0),))
    finally:
        dit.close()
    assert v2v.shape == source.shape and torch.isfinite(with_lora).all()
    assert (with_lora - v2v).abs().max() > 1e-3
    assert (v2v - source).abs().mean() < (full - source).abs().mean()  # it kept much of the input video
