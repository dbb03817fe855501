"""Step caching (sampling/step_cache.py, sampling/step_caches/) against independent implementations, on the
tiny models of the pipeline test: First-Block Cache and MagCache against diffusers' hooks in its
HunyuanVideoPipeline (same skip decisions step by step, same latents), TeaCache against a re-implementation
of the published algorithm on diffusers' transformer written here; threshold 0 changes nothing, bit for
bit; a skipped step moves no weights (or only the first double block's, for First-Block Cache). The registry,
defaults and skip window are in test_step_cache_rules.py."""

import types

import numpy as np
import pytest
import torch

import test_pipeline
from hystream import pipeline
from hystream.families.hunyuan_video.vae import SCALING_FACTOR
from hystream.loading import load_dit
from hystream.pipeline import SampleSettings
from hystream.sampling.step_cache import StepCacheSettings
from test_pipeline import FRAMES, HEIGHT, NEGATIVE, PROMPT, WIDTH, reference
from test_step_cache_reference import PUBLISHED_TEACACHE

world = test_pipeline.world  # the pipeline test's fixture, its tiny models (pytest finds it by this name)

STEPS = 12
RATIOS = (1.0, 1.02, 1.05, 0.99, 1.01, 1.03, 0.98, 1.04, 1.01, 0.99, 1.02, 0.5)  # a jump at the end: computed


teacache_rescale = np.poly1d(PUBLISHED_TEACACHE)  # TeaCache4HunyuanVideo's polynomial, as it evaluates it


def ours(world, cache: StepCacheSettings | None, *, seed=4, steps=STEPS, resident=None, negative=None, cfg=1.0,
         latent=None, denoise=1.0, loras=(), tier="auto"):
    dit = load_dit(world["files"]["dit"], prefetch_blocks=1, resident_blocks=resident, host_tier=tier)
    try:
        pos = pipeline.encode_prompt(world["te"], PROMPT)
        neg = pipeline.encode_prompt(world["te"], negative) if negative else None
        lat = pipeline.empty_latent(WIDTH, HEIGHT, FRAMES) if latent is None else latent
        out = pipeline.sample(dit, pos, lat, SampleSettings(seed=seed, steps=steps, cfg=cfg, denoise=denoise),
                              negative=neg, step_cache=cache, loras=tuple((load_lora(p, dit.model), s) for p, s in loras))
        return out, dit.step_cache_report
    finally:
        dit.close()


def load_lora(path, model):
    from hystream.loaders.lora import load_lora as load

    return load(path, model)


def relative(a, b) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


# -- diffusers' hooks, with their decisions recorded ---------------------------------------------------
def diffusers_run(world, config, record, seed=4, steps=STEPS, negative=None, cfg=1.0):
    """`pipe` with diffusers' cache `config` enabled; `record(decisions)` patches the hook to log them."""
    transformer = world["pipe"].transformer
    decisions: list[bool] = []
    undo = record(decisions)
    transformer.enable_cache(config)
    try:
        latents = reference(world, seed, steps, negative=negative, cfg=cfg)
    finally:
        transformer.disable_cache()
        undo()
    return latents, decisions


def record_fbc(decisions, last_step=None, passes=1, raw=None):
    """With `last_step`, that step is forced computed: HyStream's documented rule for every method (README,
    the node's tooltip, sampling/step_cache.py: the first and last steps are always computed, as published
    TeaCache does), which diffusers' hook, knowing no steps, does not apply. `raw` gets the hook's own
    decisions; `passes`: hook calls per step (2 with true CFG, cond then uncond)."""
    from diffusers.hooks.first_block_cache import FBCHeadBlockHook

    original = FBCHeadBlockHook._should_compute_remaining_blocks

    def patched(self, residual):
        result = bool(original(self, residual))
        if raw is not None:
            raw.append(result)
        result = result or len(decisions) // passes == last_step
        decisions.append(result)
        return result
    FBCHeadBlockHook._should_compute_remaining_blocks = patched
    return lambda: setattr(FBCHeadBlockHook, "_should_compute_remaining_blocks", original)


def record_mag(decisions):
    from diffusers.hooks.mag_cache import MagCacheHeadHook

    original = MagCacheHeadHook.new_forward

    def patched(self, module, *args, **kwargs):
        out = original(self, module, *args, **kwargs)
        decisions.append(bool(self.state_manager.get_state().should_compute))
        return out
    MagCacheHeadHook.new_forward = patched
    return lambda: setattr(MagCacheHeadHook, "new_forward", original)


def test_threshold_zero_is_bit_identical_streamed_and_resident(world):
    base, _ = ours(world, None, steps=6)
    resident, _ = ours(world, None, steps=6, resident="all")
    assert torch.equal(base, resident)
    for method in ("teacache", "first_block", "mag_cache"):
        for res in (None, "all"):
            got, report = ours(world, StepCacheSettings(method, 0.0, mag_ratios=RATIOS), steps=6, resident=res)
            assert torch.equal(got, base), (method, res)
            assert report["method"] == "off" or report["skipped"] == 0


def test_first_block_cache_matches_diffusers(world):
    from diffusers.hooks import FirstBlockCacheConfig

    skipping, last_forced = [], []
    for threshold in (0.3, 0.5, 0.6, 0.7, 0.8, 1.2):
        raw: list[bool] = []
        want, theirs = diffusers_run(world, FirstBlockCacheConfig(threshold=threshold),
                                     lambda d, raw=raw: record_fbc(d, last_step=STEPS - 1, raw=raw))
        got, report = ours(world, StepCacheSettings("first_block", threshold))
        assert report["decisions"]["positive"] == theirs, (threshold, report["decisions"], theirs)
        assert relative(got * SCALING_FACTOR, want) <= 1e-4, threshold
        skipping += [threshold] if theirs.count(False) else []
        last_forced += [threshold] if not raw[-1] else []
    assert len(skipping) >= 4 and last_forced, (skipping, last_forced)  # the rule mattered (0.7, 1.2 here)


def test_mag_cache_matches_diffusers(world):
    from diffusers.hooks import MagCacheConfig

    matched = []
    for threshold, k, retention in ((0.061, 2, 0.2), (0.123, 3, 0.1), (0.31, 4, 0.25)):
        config = MagCacheConfig(threshold=threshold, max_skip_steps=k, retention_ratio=retention,
                                num_inference_steps=STEPS, mag_ratios=list(RATIOS))
        want, theirs = diffusers_run(world, config, record_mag)
        got, report = ours(world, StepCacheSettings("mag_cache", threshold, start=retention, max_skips=k,
                                                    mag_ratios=RATIOS))
        assert theirs[-1] and theirs.count(False) > 0, theirs
        assert report["decisions"]["positive"] == theirs, (threshold, report["decisions"], theirs)
        assert relative(got * SCALING_FACTOR, want) <= 1e-4, threshold
        matched.append(threshold)
    assert len(matched) == 3


def teacache_forward(transformer, threshold: float, steps: int, decisions: list):
    """The published TeaCache4HunyuanVideo algorithm, on diffusers' transformer: the modulated input of the
    first block (its norm1), the rescaled relative L1 distance accumulated, the image residual of all blocks
    reused below the threshold; first and last steps always computed."""
    state = {"cnt": 0, "acc": 0.0, "prev_mod": None, "prev_res": None}
    original = transformer.forward

    def forward(self, hidden_states, timestep, encoder_hidden_states, encoder_attention_mask, pooled_projections,
                guidance=None, attention_kwargs=None, return_dict=True):
        b, _, f, h, w = hidden_states.shape
        p, pt = self.config.patch_size, self.config.patch_size_t
        rotary = self.rope(hidden_states)
        temb, token_replace = self.time_text_embed(timestep, pooled_projections, guidance)
        img = self.x_embedder(hidden_states)
        modulated = self.transformer_blocks[0].norm1(img, emb=temb)[0]
        if state["cnt"] in (0, steps - 1):
            compute, state["acc"] = True, 0.0
        else:
            prev = state["prev_mod"]
            state["acc"] += teacache_rescale(((modulated - prev).abs().mean() / prev.abs().mean()).item())
            compute = not state["acc"] < threshold
            if compute:
                state["acc"] = 0.0
        state["prev_mod"] = modulated
        state["cnt"] = (state["cnt"] + 1) % steps
        decisions.append(compute)
        if compute:
            txt = self.context_embedder(encoder_hidden_states, timestep, encoder_attention_mask)
            n = img.shape[1] + txt.shape[1]
            valid = img.shape[1] + encoder_attention_mask.sum(dim=1, dtype=torch.int)
            mask = (torch.arange(n)[None] < valid[:, None])[:, None, None, :]
            start = img.clone()
            for block in (*self.transformer_blocks, *self.single_transformer_blocks):
                img, txt = block(img, txt, temb, mask, rotary, token_replace, h // p * (w // p))
            state["prev_res"] = img - start
        else:
            img = img + state["prev_res"]
        out = self.proj_out(self.norm_out(img, temb)).reshape(b, f // pt, h // p, w // p, -1, pt, p, p)
        out = out.permute(0, 4, 1, 5, 2, 6, 3, 7).flatten(6, 7).flatten(4, 5).flatten(2, 3)
        return (out,) if not return_dict else types.SimpleNamespace(sample=out)

    transformer.forward = types.MethodType(forward, transformer)
    return lambda: setattr(transformer, "forward", original)


def test_teacache_matches_the_published_algorithm(world):
    transformer = world["pipe"].transformer
    matched = []
    plain = reference(world, 4, STEPS)
    for threshold in (0.1, 0.3, 0.6, 1.0):
        decisions: list[bool] = []
        undo = teacache_forward(transformer, threshold, STEPS, decisions)
        try:
            want = reference(world, 4, STEPS)
        finally:
            undo()
        got, report = ours(world, StepCacheSettings("teacache", threshold))
        assert report["decisions"]["positive"] == decisions, (threshold, report["decisions"], decisions)
        assert relative(got * SCALING_FACTOR, want) <= 1e-4, threshold
        if decisions.count(False):
            matched.append(threshold)
            assert not torch.allclose(want, plain)
    assert len(matched) >= 2, matched


@pytest.mark.parametrize("method", ["teacache", "first_block", "mag_cache"])
def test_a_skipped_step_moves_no_weights(world, method):
    """Bytes streamed fall with the skipped steps: a skipped TeaCache / MagCache step copies nothing of its
    own, a skipped First-Block Cache step only the blocks up to the first double one (both within one
    block of prefetch that crosses into the next step)."""
    threshold = {"teacache": 0.6, "first_block": 0.9, "mag_cache": 0.3}[method]
    dit = load_dit(world["files"]["dit"])
    block = max(dit.streamer.block_bytes(i) for i in range(dit.streamer.block_count()))
    all_blocks = sum(dit.streamer.block_bytes(i) for i in range(dit.streamer.block_count()))
    head = sum(dit.streamer.block_bytes(i) for i in range(dit.units.last_of(dit.model.cfg.depth_refiner) + 1))
    dit.close()
    _, report = ours(world, StepCacheSettings(method, threshold, mag_ratios=RATIOS))
    decisions, per_step = report["decisions"]["positive"], report["bytes_per_step"]
    assert decisions.count(False) > 0, decisions
    for computed, copied in zip(decisions, per_step):
        allowed = all_blocks if computed else (head if method == "first_block" else 0)
        assert abs(copied - allowed) <= block, (method, decisions, per_step)
    uncached = all_blocks * len(decisions)
    assert sum(per_step) <= uncached - decisions.count(False) * (all_blocks - head) + 2 * block


def test_cfg_keeps_separate_caches_as_diffusers_cache_contexts(world):
    """With true CFG, diffusers keeps one First-Block Cache state per branch (cache_context "cond" and
    "uncond"); so does HyStream: the same decisions per branch and the same latents. One shared cache would
    compare (and reuse) the uncond pass's residual against the cond pass's of the same step."""
    from diffusers.hooks import FirstBlockCacheConfig

    threshold = 0.8
    want, theirs = diffusers_run(world, FirstBlockCacheConfig(threshold=threshold),
                                 lambda d: record_fbc(d, last_step=STEPS - 1, passes=2), negative=NEGATIVE, cfg=4.0)
    got, report = ours(world, StepCacheSettings("first_block", threshold), negative=NEGATIVE, cfg=4.0)
    assert theirs[0::2].count(False) > 0, theirs
    assert relative(got * SCALING_FACTOR, want) <= 1e-4
    assert report["decisions"] == {"positive": theirs[0::2], "negative": theirs[1::2]}, (report["decisions"], theirs)


def test_lora_and_v2v_under_a_step_cache(world, tmp_path):
    from hystream.families.hunyuan_video.demo import write_comfy_lora
    from tiny_dit import TINY

    lora = write_comfy_lora(str(tmp_path), cfg=__import__("dataclasses").replace(TINY, text_dim=512, pooled_dim=128))
    with_lora, report = ours(world, StepCacheSettings("teacache", 0.6), loras=((lora, 0.8),))
    without, _ = ours(world, StepCacheSettings("teacache", 0.6))
    assert report["skipped"] > 0 and not torch.equal(with_lora, without)
    start = torch.randn(1, 16, 3, HEIGHT // 8, WIDTH // 8)
    v2v, report = ours(world, StepCacheSettings("first_block", 0.9), latent=start, denoise=0.6)
    plain, _ = ours(world, None, latent=start, denoise=0.6)
    assert len(report["decisions"]["positive"]) == round(STEPS * 0.6) and report["skipped"] > 0, report
    assert 1e-4 < relative(v2v, plain) < 0.5  # the skips changed the V2V result, boundedly


