"""FramePack sampled section by section (families/hunyuan_video/framepack.py) and assembled in bounded memory
(sampling/section_video.py) against diffusers' HunyuanVideoFramepackPipeline with the same weights: every
section's latents (<= 1e-4) and the blended frames (<= 1e-3), in both orders (inverted anti-drifting for
FramePack, forward for F1), with 4 sections and with more than 4 (the padding schedule changes), with true CFG;
streamed equals resident bit for bit.

Two things are handed to diffusers rather than compared: the start image's latent (its pipeline draws the
VAE's posterior sample from the section generator; FramePack's own demo does not, and neither do we) and the
SigLIP states (tests/test_siglip.py compares our SigLIP with transformers')."""

import pytest
import torch

from hystream import long_video, pipeline
from hystream.families.hunyuan_video.vae import SCALING_FACTOR
from hystream.loading import load_dit, load_vae
from hystream.sampling.long_video import LongVideoSettings
from tiny_framepack import reference_model, save_layout
from tiny_vae import reference_vae, save_vae

HEIGHT, WIDTH, STEPS = 64, 96, 3


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from diffusers import FlowMatchEulerDiscreteScheduler, HunyuanVideoFramepackPipeline
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    root = tmp_path_factory.mktemp("framepack_world")
    transformer, vae = reference_model(), reference_vae()
    torch.manual_seed(3)
    siglip = SiglipVisionModel(SiglipVisionConfig(hidden_size=128, intermediate_size=64, num_hidden_layers=2,
                                                  num_attention_heads=2, image_size=32, patch_size=8)).eval()
    # the reference's schedule: μ from the section's tokens, exponential time shift (FramePack's flux_time_shift)
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096)
    pipe = HunyuanVideoFramepackPipeline(text_encoder=None, tokenizer=None, transformer=transformer, vae=vae,
                                         scheduler=scheduler, text_encoder_2=None, tokenizer_2=None, image_encoder=siglip,
                                         feature_extractor=SiglipImageProcessor(size={"height": 32, "width": 32}))
    g = torch.Generator().manual_seed(7)
    data = {"states": torch.randn(1, 10, 32, generator=g), "mask": (torch.arange(10) < 7).long()[None],
            "pooled": torch.randn(1, 24, generator=g), "neg_states": torch.randn(1, 6, 32, generator=g),
            "neg_pooled": torch.randn(1, 24, generator=g),
            "start": torch.randn(1, 16, 1, HEIGHT // 8, WIDTH // 8, generator=g),  # model space
            "image": torch.rand(1, 3, HEIGHT, WIDTH, generator=g) * 2 - 1}
    with torch.no_grad():
        data["embeds"] = pipe.encode_image(data["image"], device="cpu")
    pipe.prepare_image_latents = lambda image, dtype=None, device=None, generator=None, latents=None: data["start"].to(dtype)
    return {"pipe": pipe, "dit": save_layout(transformer, "kijai_bf16", str(root / "dit"))[0],
            "vae": save_vae(vae, "comfy", str(root / "vae")), **data}


def reference(world, order, window, frames, seed, cfg=1.0, output="latent"):
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video_framepack import FramepackSamplingType

    kind = FramepackSamplingType.INVERTED_ANTI_DRIFTING if order == "inverted" else FramepackSamplingType.VANILLA
    negative = {"negative_prompt_embeds": world["neg_states"], "negative_pooled_prompt_embeds": world["neg_pooled"],
                "negative_prompt_attention_mask": torch.ones(1, 6, dtype=torch.long), "true_cfg_scale": cfg} if cfg > 1 else {}
    with torch.no_grad():
        return world["pipe"](image=world["image"], prompt_embeds=world["states"], pooled_prompt_embeds=world["pooled"],
                             prompt_attention_mask=world["mask"], height=HEIGHT, width=WIDTH, num_frames=frames,
                             latent_window_size=window, num_inference_steps=STEPS, guidance_scale=10.0,
                             generator=torch.Generator().manual_seed(seed), sampling_type=kind, output_type=output,
                             return_dict=False, **negative)[0]


def ours(world, order, window, frames, seed, cfg=1.0, resident=None, decode=True):
    settings = LongVideoSettings(frames=frames, window=window, steps=STEPS, embedded_guidance=10.0, cfg=cfg, seed=seed,
                                 order=order)
    positive = [[world["states"], {"pooled_output": world["pooled"], "attention_mask": world["mask"]}]]
    negative = [[world["neg_states"], {"pooled_output": world["neg_pooled"]}]] if cfg > 1 else None
    dit = load_dit(world["dit"], resident_blocks=resident)
    vae = load_vae(world["vae"]) if decode else None
    sections, frames_out = [], []

    def decode(latents):
        sections.append(latents * SCALING_FACTOR)
        return pipeline.decode(vae, latents, clamp=False) if vae is not None else latents.new_zeros(1, 8, 12, 3)

    try:
        count = long_video.sample_long_video(dit, positive, negative, world["start"] / SCALING_FACTOR,
                                             world["embeds"], settings, decode, frames_out.append)
    finally:
        dit.close()
    return sections, (torch.cat(frames_out) if frames_out else None), count


def compare_sections(order, got, want):
    assert len(got) == len(want)
    for mine, theirs in zip(got, want):  # the reference keeps the whole history; we give the part decoded
        part = theirs[:, :, :mine.shape[2]] if order == "inverted" else theirs[:, :, -mine.shape[2]:]
        assert part.abs().max() > 1.0
        assert (mine - part).abs().max().item() <= 1e-4


@pytest.mark.parametrize("order, window, frames", [("inverted", 3, 33), ("inverted", 2, 30), ("forward", 3, 33),
                                                   ("forward", 2, 30), ("inverted", 3, 5)])
def test_sections_and_frames_match_diffusers(world, order, window, frames):
    got, video, count = ours(world, order, window, frames, seed=11)
    compare_sections(order, got, reference(world, order, window, frames, 11))
    want = reference(world, order, window, frames, 11, output="pt")[0].permute(0, 2, 3, 1)
    assert video.shape == want.shape and count == want.shape[0]
    assert (video - want).abs().max().item() <= 1e-3


def test_true_cfg_with_a_negative_prompt(world):
    got, _, _ = ours(world, "inverted", 3, 20, seed=5, cfg=3.0, decode=False)
    compare_sections("inverted", got, reference(world, "inverted", 3, 20, 5, cfg=3.0))
    plain, _, _ = ours(world, "inverted", 3, 20, seed=5, decode=False)
    assert (plain[-1] - got[-1]).abs().max() > 1e-2  # the negative pass changes the result


def test_streamed_equals_resident(world):
    streamed, _, _ = ours(world, "forward", 2, 20, seed=3, decode=False)
    resident, _, _ = ours(world, "forward", 2, 20, seed=3, resident="all", decode=False)
    assert all(torch.equal(a, b) for a, b in zip(streamed, resident))


@pytest.mark.parametrize("order", ["inverted", "forward"])
def test_the_history_kept_is_what_a_section_reads_not_the_video(order):
    from hystream.families.hunyuan_video.framepack import HISTORY, SectionHistory, section_count

    settings = LongVideoSettings(frames=400, window=2, order=order)
    history = SectionHistory(settings, torch.zeros(1, 16, 1, 4, 4))
    for k in range(section_count(settings)):
        packed = history.packed(k)
        assert packed.clean.shape[2] == 1 + HISTORY[order][0 if order == "inverted" else 2]
        history.add(k, torch.full((1, 16, 2, 4, 4), float(k)))
    assert section_count(settings) == 80 and history.latents.shape[2] == max(sum(HISTORY[order]), 2 * 2 + 1)
