"""Step caches against what was published, written here independently of the product: TeaCache's
HunyuanVideo polynomial and accumulate/reset rule (ali-vilab/TeaCache), MagCache's HunyuanVideo ratio
tables (Zehong-Ma/MagCache) and their resampling to the run's steps (diffusers' `nearest_interp`); then the
caches on HunyuanVideo-I2V token replace: First-Block Cache equals diffusers' hook there, and every method
skips, stays near the uncached run and keeps frame 0 the clean start image."""

import numpy as np
import pytest
import torch

import test_i2v_pipeline
from hystream import pipeline
from hystream.families.hunyuan_video.caches import (
    CACHE_CONSTANTS,
    MAG_RATIOS_544P,
    MAG_RATIOS_720P,
    TEACACHE_COEFFICIENTS,
)
from hystream.families.hunyuan_video.vae import SCALING_FACTOR
from hystream.loading import load_dit
from hystream.pipeline import SampleSettings
from hystream.sampling.step_cache import StepCacheSettings
from hystream.sampling.step_caches import make_step_cache
from test_i2v_pipeline import FRAMES, HEIGHT, PROMPT, WIDTH, i2v_pipe

# ali-vilab/TeaCache @7c10efc, TeaCache4HunyuanVideo/teacache_sample_video.py, lines 98-110 (copied, not imported)
PUBLISHED_TEACACHE = [7.33226126e+02, -4.01131952e+02, 6.75869174e+01, -3.14987800e+00, 9.61237896e-02]
# Zehong-Ma/MagCache, MagCache4HunyuanVideo/magcache_sample_video.py: `np.array([1.0]+[...])` for 720 and 544
PUBLISHED_MAG_720P = [1.0] + [
    1.0754, 1.27807, 1.11596, 1.09504, 1.05188, 1.00844, 1.05779, 1.00657, 1.04142, 1.03101, 1.00679, 1.02556,
    1.00908, 1.06949, 1.05438, 1.02214, 1.02321, 1.03019, 1.00779, 1.03381, 1.01886, 1.01161, 1.02968, 1.00544,
    1.02822, 1.00689, 1.02119, 1.0105, 1.01044, 1.01572, 1.02972, 1.0094, 1.02368, 1.0226, 0.98965, 1.01588,
    1.02146, 1.0018, 1.01687, 0.99436, 1.00283, 1.01139, 0.97122, 0.98251, 0.94513, 0.97656, 0.90943, 0.85703,
    0.75456]
PUBLISHED_MAG_544P = [1.0] + [
    1.06971, 1.29073, 1.11245, 1.09596, 1.05233, 1.01415, 1.05672, 1.00848, 1.03632, 1.02974, 1.00984, 1.03028,
    1.00681, 1.06614, 1.05022, 1.02592, 1.01776, 1.02985, 1.00726, 1.03727, 1.01502, 1.00992, 1.03371, 0.9976,
    1.02742, 1.0093, 1.01869, 1.00815, 1.01461, 1.01152, 1.03082, 1.0061, 1.02162, 1.01999, 0.99063, 1.01186,
    1.0217, 0.99947, 1.01711, 0.9904, 1.00258, 1.00878, 0.97039, 0.97686, 0.94315, 0.97728, 0.91154, 0.86139,
    0.76592]


# -- TeaCache: the published rule, step by step -------------------------------------------------------
def published_teacache(probes, threshold):
    """teacache_sample_video.py's rule, transcribed: first and last steps computed (accumulator reset),
    else the rescaled relative L1 change of the modulated input accumulated, computed (and reset) once
    it reaches the threshold. Returns the decisions and the accumulator after each step."""
    rescale_func = np.poly1d(PUBLISHED_TEACACHE)
    num_steps, acc, previous, decisions, accumulated = len(probes), 0.0, None, [], []
    for cnt, modulated_inp in enumerate(probes):
        if cnt == 0 or cnt == num_steps - 1:
            should_calc, acc = True, 0.0
        else:
            acc += rescale_func(((modulated_inp - previous).abs().mean() / previous.abs().mean()).cpu().item())
            should_calc = not acc < threshold
            if should_calc:
                acc = 0.0
        previous = modulated_inp
        decisions.append(should_calc)
        accumulated.append(float(acc))
    return decisions, accumulated


def our_teacache(probes, threshold):
    """HyStream's TeaCache, called as the DiT calls it, with `probes` as the modulated inputs."""
    cache = make_step_cache(StepCacheSettings("teacache", threshold), len(probes), 720, CACHE_CONSTANTS)
    img, decisions, accumulated = torch.ones(1, 4, 8), [], []
    for probe in probes:
        cache.begin_pass("positive")
        out = cache.before_blocks(img, probe=lambda p=probe: p)
        if out is None:
            cache.after_blocks(img.clone(), img + 3)
        decisions.append(out is None)
        accumulated.append(cache.state.accumulated)
    return decisions, accumulated


def test_teacache_decides_and_accumulates_as_published():
    gen = torch.Generator().manual_seed(0)
    probes = [torch.randn(1, 16, 32, generator=gen)]
    for scale in (0.05, 0.3, 0.1, 0.02, 0.2, 0.4, 0.05, 0.08, 0.15, 0.03, 0.25, 0.1, 0.06, 0.5, 0.04):
        probes.append(probes[-1] + scale * torch.randn(1, 16, 32, generator=gen))  # relative L1 ≈ scale
    for threshold in (0.1, 0.15, 0.3, 0.6):
        want, want_acc = published_teacache(probes, threshold)
        got, got_acc = our_teacache(probes, threshold)
        assert got == want, threshold
        assert got_acc == pytest.approx(want_acc, rel=1e-12, abs=1e-12), threshold
        assert 0 < want[1:-1].count(False) < len(want) - 2, (threshold, want)  # both decisions occur


def test_the_constants_are_the_published_ones():
    assert list(TEACACHE_COEFFICIENTS) == PUBLISHED_TEACACHE
    assert list(MAG_RATIOS_720P) == PUBLISHED_MAG_720P and list(MAG_RATIOS_544P) == PUBLISHED_MAG_544P


# -- MagCache: the tables every run resamples -----------------------------------------------------------
@pytest.mark.parametrize("height, published", [(720, PUBLISHED_MAG_720P), (544, PUBLISHED_MAG_544P)])
def test_mag_ratios_resampled_as_diffusers_does(height, published):
    from diffusers.hooks.mag_cache import nearest_interp

    for steps in (1, 2, 3, 7, 12, 20, 25, 30, 49, 50, 51, 64, 100):  # the run's steps, no ratios given
        got = make_step_cache(StepCacheSettings("mag_cache", 0.1), steps, height, CACHE_CONSTANTS).ratios
        assert got == nearest_interp(torch.tensor(published, dtype=torch.float64), steps).tolist(), steps
    assert make_step_cache(StepCacheSettings("mag_cache", 0.1), 50, height, CACHE_CONSTANTS).ratios == published


# -- on HunyuanVideo-I2V token replace ------------------------------------------------------------------
world = test_i2v_pipeline.world  # the I2V test's fixture and tiny models
STEPS = 8


def ours_i2v(world, cache, seed=4):
    dit = load_dit(world["files"]["token_replace"])
    try:
        positive = pipeline.encode_prompt(world["te"], PROMPT)
        latent_image = pipeline.encode_start_image(world["vae"], world["image"], WIDTH, HEIGHT)
        pos = pipeline.with_start_image(positive, latent_image, FRAMES)
        out = pipeline.sample(dit, pos, pipeline.empty_latent(WIDTH, HEIGHT, FRAMES),
                              SampleSettings(seed=seed, steps=STEPS), step_cache=cache)
        return out, dit.step_cache_report, latent_image
    finally:
        dit.close()


def diffusers_fbc_i2v(world, threshold, seed=4):
    """diffusers' First-Block Cache on its token-replace I2V pipeline, fed our prompt embeds (as the I2V
    test does); the last step forced computed, HyStream's documented rule (see test_step_cache.py)."""
    from diffusers.hooks import FirstBlockCacheConfig
    from PIL import Image

    from test_step_cache import record_fbc

    states, extra = pipeline.encode_prompt(world["te"], PROMPT)[0]
    pipe = i2v_pipe(world, "token_replace")
    decisions, raw = [], []
    undo = record_fbc(decisions, last_step=STEPS - 1, raw=raw)
    pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=threshold))
    try:  # the I2V pipeline opens no cache context of its own
        with torch.no_grad(), pipe.transformer.cache_context("cond"):
            latents = pipe(image=Image.fromarray(world["rgb"]), prompt_embeds=states,
                           pooled_prompt_embeds=extra["pooled_output"], prompt_attention_mask=extra["attention_mask"],
                           height=HEIGHT, width=WIDTH, num_frames=FRAMES, num_inference_steps=STEPS,
                           guidance_scale=6.0, generator=torch.Generator().manual_seed(seed), output_type="latent",
                           return_dict=False)[0]
    finally:
        pipe.transformer.disable_cache()
        undo()
    return latents, decisions


def test_first_block_cache_on_token_replace_matches_diffusers(world):
    """The decision reads the first block's residual with token replace's own modulation of frame 0."""
    threshold = 0.8
    want, theirs = diffusers_fbc_i2v(world, threshold)
    got, report, _ = ours_i2v(world, StepCacheSettings("first_block", threshold))
    assert theirs.count(False) > 0, theirs
    assert report["decisions"]["positive"] == theirs, (report["decisions"], theirs)
    assert ((got * SCALING_FACTOR - want).abs().max() / want.abs().max()).item() <= 1e-4


@pytest.fixture(scope="module")
def uncached(world):
    return ours_i2v(world, None)[0]


@pytest.mark.parametrize("method, threshold", [("teacache", 5.0), ("first_block", 5.0), ("mag_cache", 5.0)])
def test_step_cache_on_token_replace(world, uncached, method, threshold):
    """A cache that skips changes the result, by a bounded amount, and keeps frame 0 the clean start image;
    one that never skips (a threshold nothing reaches) leaves it bit-identical."""
    got, report, latent_image = ours_i2v(world, StepCacheSettings(method, threshold, 0.1, 1.0, 2))
    assert report["skipped"] > 0, report
    change = ((got - uncached).abs().max() / uncached.abs().max()).item()
    assert 1e-4 < change < 0.5, change
    assert (got[:, :, :1] - latent_image).abs().max() < 1e-6
    never, report, _ = ours_i2v(world, StepCacheSettings(method, 1e-9, 0.1, 1.0, 2))
    assert report["skipped"] == 0 and torch.equal(never, uncached)
