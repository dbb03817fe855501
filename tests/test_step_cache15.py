"""Step caches on HunyuanVideo 1.5: First-Block Cache (it needs no calibration) equals diffusers' hook on
HunyuanVideo15Pipeline — the same skip decisions step by step and the same latents — and a skipped step moves
no weights but the first block's; TeaCache and MagCache, whose published calibrations are 1.0's, are refused
naming the family instead of running with the wrong curve."""

import pytest
import torch

import test_pipeline15
from hystream import pipeline
from hystream.errors import HyStreamError
from hystream.families.hunyuan_video_15.family import SCALING_FACTOR
from hystream.loading import load_dit
from hystream.pipeline import SampleSettings
from hystream.sampling.step_cache import StepCacheSettings
from test_pipeline15 import FRAMES, HEIGHT, PROMPT, WIDTH, reference

world = test_pipeline15.world  # the 1.5 pipeline test's fixture and tiny models
STEPS = 10


def ours(world, cache, seed=4):
    dit = load_dit(world["files"]["dit"], prefetch_blocks=1)
    try:
        with torch.inference_mode():
            pos = pipeline.encode_prompt(world["te"], PROMPT)
            out = pipeline.sample(dit, pos, pipeline.empty_latent(WIDTH, HEIGHT, FRAMES, family=dit.family),
                                  SampleSettings(seed=seed, steps=STEPS, flow_shift=5.0, embedded_guidance=None, cfg=1.0),
                                  step_cache=cache)
        return out, dit.step_cache_report, dit.stats.as_dict()
    finally:
        dit.close()


def diffusers_fbc(world, threshold, seed=4):
    from diffusers.hooks import FirstBlockCacheConfig
    from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry
    from diffusers.hooks.first_block_cache import FBCHeadBlockHook
    from diffusers.models.transformers.transformer_hunyuan_video15 import HunyuanVideo15TransformerBlock

    # diffusers does not list 1.5's block for its hooks yet; its outputs are (image, text) as 1.0's block's
    TransformerBlockRegistry.register(HunyuanVideo15TransformerBlock, TransformerBlockMetadata(
        return_hidden_states_index=0, return_encoder_hidden_states_index=1))
    decisions, raw, original = [], [], FBCHeadBlockHook._should_compute_remaining_blocks

    def recorded(self, residual):  # the last step forced computed: HyStream's documented rule, which the hook
        raw.append(bool(original(self, residual)))  # lacks (see record_fbc in test_step_cache.py)
        decisions.append(raw[-1] or len(decisions) == STEPS - 1)
        return decisions[-1]

    FBCHeadBlockHook._should_compute_remaining_blocks = recorded
    transformer = world["pipe"].transformer
    transformer.enable_cache(FirstBlockCacheConfig(threshold=threshold))
    try:
        latents = reference(world, seed, STEPS, cfg=1.0)
    finally:
        transformer.disable_cache()
        FBCHeadBlockHook._should_compute_remaining_blocks = original
    return latents, decisions, raw


def test_first_block_cache_matches_diffusers(world):
    _base, _, base_stats = ours(world, None)
    skipping, last_forced = [], []
    for threshold in (0.5, 0.8, 1.0, 1.2):  # random weights change more per step than trained ones
        want, theirs, raw = diffusers_fbc(world, threshold)
        got, report, stats = ours(world, StepCacheSettings("first_block", threshold))
        assert report["decisions"]["positive"] == theirs, (threshold, report["decisions"], theirs)
        assert ((got * SCALING_FACTOR - want).abs().max() / want.abs().max()).item() <= 1e-4, threshold
        if theirs.count(False):
            assert stats["bytes_copied"] < base_stats["bytes_copied"]  # the skipped steps streamed less
            skipping.append(threshold)
        last_forced += [threshold] if not raw[-1] else []
    assert skipping and last_forced, (skipping, last_forced)  # something skipped; the last-step rule mattered (1.2)


@pytest.mark.parametrize("method", ["teacache", "mag_cache"])
def test_calibrated_caches_are_refused_on_1_5(world, method):
    with pytest.raises(HyStreamError) as e:
        ours(world, StepCacheSettings(method, 0.1))
    assert "HunyuanVideo 1.5" in str(e.value) and "first_block" in str(e.value)
