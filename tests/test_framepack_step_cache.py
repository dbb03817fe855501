"""Step caches on FramePack: every section is one denoiser run, so its cache starts afresh (first step computed,
nothing carried over from the previous section). First-Block Cache and MagCache against diffusers' hooks on
HunyuanVideoFramepackPipeline with the same weights: the same skip decisions section by section and the same
latents. diffusers' FramePack pipeline opens no cache context and resets no hook between sections: its
MagCache resets itself after `num_inference_steps` calls, its First-Block Cache is reset here at each
section's start (what a per-section run means), and its last step is forced computed (HyStream's rule)."""

import pytest
import torch

import test_framepack_sampling
from hystream import long_video
from hystream.loading import load_dit
from hystream.sampling.long_video import LongVideoSettings
from hystream.sampling.step_cache import StepCacheSettings
from test_framepack_sampling import HEIGHT, WIDTH, compare_sections

world = test_framepack_sampling.world  # its tiny FramePack DiT, VAE, SigLIP and diffusers pipeline
STEPS, WINDOW, FRAMES, SEED = 6, 2, 9, 11  # 2 sections
RATIOS = [1.0, 1.02, 1.01, 0.99, 1.03, 0.7]


def ours(world, cache, order="inverted"):
    """Every section's latents (scaled as the reference's) and the step cache's report of its run."""
    from hystream.families.hunyuan_video.vae import SCALING_FACTOR

    settings = LongVideoSettings(frames=FRAMES, window=WINDOW, steps=STEPS, embedded_guidance=10.0, seed=SEED,
                                 order=order)
    positive = [[world["states"], {"pooled_output": world["pooled"], "attention_mask": world["mask"]}]]
    dit = load_dit(world["dit"])
    sections, reports = [], []

    def decode(latents):
        sections.append(latents * SCALING_FACTOR)
        return latents.new_zeros(1, 8, 12, 3)

    try:
        long_video.sample_long_video(dit, positive, None, world["start"] / SCALING_FACTOR, world["embeds"], settings,
                                     decode, lambda frames: None, step_cache=cache,
                                     on_section=lambda k, n: reports.append(dit.step_cache_report))
    finally:
        dit.close()
    return sections, reports


def theirs(world, config, order="inverted"):
    """diffusers' pipeline with `config` enabled; returns (sections' latents, per-section decisions)."""
    from diffusers.hooks.first_block_cache import FBCHeadBlockHook
    from diffusers.hooks.hooks import CacheContext, _set_cache_context
    from diffusers.hooks.mag_cache import MagCacheHeadHook
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video_framepack import FramepackSamplingType

    pipe, sections = world["pipe"], []
    should = FBCHeadBlockHook._should_compute_remaining_blocks
    mag = MagCacheHeadHook.new_forward
    prepare = pipe.prepare_latents

    def new_section(*args, **kwargs):  # called once per section, before its first step
        pipe.transformer._reset_stateful_cache()  # (drops the context too: set it again)
        _set_cache_context(pipe.transformer, CacheContext("cond"))
        sections.append([])
        return prepare(*args, **kwargs)

    def fbc_decision(self, residual):
        decided = bool(should(self, residual)) or len(sections[-1]) == STEPS - 1
        sections[-1].append(decided)
        return decided

    def mag_forward(self, module, *args, **kwargs):
        out = mag(self, module, *args, **kwargs)
        sections[-1].append(bool(self.state_manager.get_state().should_compute))
        return out

    kind = FramepackSamplingType.INVERTED_ANTI_DRIFTING if order == "inverted" else FramepackSamplingType.VANILLA
    FBCHeadBlockHook._should_compute_remaining_blocks, MagCacheHeadHook.new_forward = fbc_decision, mag_forward
    pipe.prepare_latents = new_section
    pipe.transformer.enable_cache(config)
    try:
        with torch.no_grad():
            latents = pipe(image=world["image"], prompt_embeds=world["states"], pooled_prompt_embeds=world["pooled"],
                           prompt_attention_mask=world["mask"], height=HEIGHT, width=WIDTH, num_frames=FRAMES,
                           latent_window_size=WINDOW, num_inference_steps=STEPS, guidance_scale=10.0,
                           generator=torch.Generator().manual_seed(SEED), sampling_type=kind, output_type="latent",
                           return_dict=False)[0]
    finally:
        pipe.transformer.disable_cache()
        del pipe.prepare_latents
        FBCHeadBlockHook._should_compute_remaining_blocks, MagCacheHeadHook.new_forward = should, mag
    return latents, sections


def check(order, got, reports, want, decisions):
    assert len(reports) == len(decisions) == 2
    assert [r["decisions"]["positive"] for r in reports] == decisions, ([r["decisions"] for r in reports], decisions)
    assert all(d[0] and d[-1] for d in decisions)  # each section's first and last steps computed
    assert all(d.count(False) for d in decisions), decisions  # the caches did skip, in every section
    compare_sections(order, got, want)


# at 1.0 diffusers' hook, not reset, would compare section 2's first step with section 1's last and skip it
@pytest.mark.parametrize("order, threshold", [("inverted", 1.0), ("forward", 0.6)])
def test_first_block_cache_per_section_matches_diffusers(world, order, threshold):
    from diffusers.hooks import FirstBlockCacheConfig

    want, decisions = theirs(world, FirstBlockCacheConfig(threshold=threshold), order)
    got, reports = ours(world, StepCacheSettings("first_block", threshold), order)
    check(order, got, reports, want, decisions)


def test_mag_cache_per_section_matches_diffusers(world):
    from diffusers.hooks import MagCacheConfig

    threshold, k, retention = 0.123, 3, 0.1
    config = MagCacheConfig(threshold=threshold, max_skip_steps=k, retention_ratio=retention,
                            num_inference_steps=STEPS, mag_ratios=RATIOS)
    want, decisions = theirs(world, config)
    got, reports = ours(world, StepCacheSettings("mag_cache", threshold, start=retention, max_skips=k,
                                                 mag_ratios=tuple(RATIOS)))
    check("inverted", got, reports, want, decisions)
