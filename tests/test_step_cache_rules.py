"""The step caches' rules without a model: one registry and one table of defaults the node and the CLI read,
the family's published constants chosen by resolution, a family that publishes none refused clearly, and the
window (start, end) and run of skips (max_skips) every method keeps."""

import pytest
import torch

from hystream.sampling.step_cache import StepCacheSettings

STEPS = 12
RATIOS = (1.0, 1.02, 1.05, 0.99, 1.01, 1.03, 0.98, 1.04, 1.01, 0.99, 1.02, 0.5)


def test_one_registry_one_table_of_defaults():
    from hystream.cli import build_parser
    from hystream.nodes.step_cache import HyStreamStepCache
    from hystream.sampling.step_caches import METHODS, defaults

    assert list(defaults.METHOD_DEFAULTS) == list(METHODS) and defaults.DEFAULT_METHOD in METHODS
    spec = HyStreamStepCache.INPUT_TYPES()["required"]
    assert spec["method"][0] == list(METHODS) and spec["method"][1]["default"] == defaults.DEFAULT_METHOD
    assert spec["threshold"][1]["default"] == defaults.default_threshold(defaults.DEFAULT_METHOD)
    assert (spec["start"][1]["default"], spec["end"][1]["default"], spec["max_skips"][1]["default"]) == (
        defaults.START, defaults.END, defaults.MAX_SKIPS)
    for d in defaults.METHOD_DEFAULTS.values():  # every method's recommended range named in the tooltip
        assert f"{d.label} {d.recommended[0]:g}-{d.recommended[1]:g}" in spec["threshold"][1]["tooltip"]
    args = build_parser().parse_args(["generate", "--dit", "d", "--llm", "l", "--clip", "c", "--vae", "v",
                                      "--prompt", "p", "--step-cache", "mag_cache"])
    assert args.cache_threshold is None  # cmd_generate takes the method's from the table
    assert (args.cache_start, args.cache_end, args.cache_max_skips) == (defaults.START, defaults.END, defaults.MAX_SKIPS)


def test_make_step_cache_by_name_and_the_familys_constants():
    from hystream.errors import InputError
    from hystream.families.base import CacheConstants
    from hystream.families.hunyuan_video.caches import CACHE_CONSTANTS, MAG_RATIOS_544P, MAG_RATIOS_720P
    from hystream.sampling.step_caches import METHODS, FirstBlockCache, MagCache, TeaCache, make_step_cache

    assert METHODS == {"teacache": TeaCache, "first_block": FirstBlockCache, "mag_cache": MagCache}
    for off in (None, StepCacheSettings(), StepCacheSettings("off", 0.5), StepCacheSettings("teacache", 0.0)):
        assert make_step_cache(off, 10, 720, CACHE_CONSTANTS) is None  # off: no cache object at all
    with pytest.raises(InputError, match="step cache method"):
        make_step_cache(StepCacheSettings("tea", 0.1), 10, 720, CACHE_CONSTANTS)
    hooks = (lambda: None, lambda: None)
    for name, cls in METHODS.items():
        cache = make_step_cache(StepCacheSettings(name, 0.1), 10, 720, CACHE_CONSTANTS, on_decided=hooks[0],
                                on_skip_rest=hooks[1])
        assert type(cache) is cls and (cache.on_decided, cache.on_skip_rest) == hooks
        assert cache.pauses_after_first_block == (name == "first_block") and cache.needs_probe == (name == "teacache")
        # per pass the residual (+ the previous value it compares with), plus the forward's clones
        per_pass, transient = {"teacache": (2, 1), "first_block": (2, 2), "mag_cache": (1, 1)}[name]
        assert cache.device_bytes(100, 8, 2, 2) == 100 * 8 * 2 * (per_pass * 2 + transient)
    for height, ratios in ((720, MAG_RATIOS_720P), (632, MAG_RATIOS_720P), (631, MAG_RATIOS_544P), (480, MAG_RATIOS_544P)):
        assert make_step_cache(StepCacheSettings("mag_cache", 0.1), 50, height, CACHE_CONSTANTS).ratios == list(ratios)
    given = make_step_cache(StepCacheSettings("mag_cache", 0.1, mag_ratios=RATIOS), 12, 720, CACHE_CONSTANTS)
    assert given.ratios == list(RATIOS)
    # a family that publishes nothing: First-Block Cache needs nothing, the others are refused clearly
    assert isinstance(make_step_cache(StepCacheSettings("first_block", 0.1), 10, 720, CacheConstants()), FirstBlockCache)
    for name, what in (("teacache", "TeaCache's rescaling coefficients"), ("mag_cache", "MagCache's magnitude ratios")):
        with pytest.raises(InputError) as err:
            make_step_cache(StepCacheSettings(name, 0.1), 10, 720, CacheConstants())
        assert what in err.value.expected and err.value.found and "first_block" in err.value.fix


def drive(cache, steps: int) -> list[torch.Tensor]:
    """Call `cache` as the DiT does, for `steps` steps that never change: every step a method may skip, it
    skips. The blocks add 3 (the first double block 1 of it); a skipped step must give the same output."""
    img, outs = torch.ones(1, 4, 8), []
    for _ in range(steps):
        cache.begin_pass("positive")
        out = cache.before_blocks(img, probe=lambda: img * 2)
        if out is None and cache.pauses_after_first_block:
            out = cache.after_first_block(img, img + 1)
        if out is None:
            out = img + 3
            cache.after_blocks(None if cache.pauses_after_first_block else img.clone(), out)
        outs.append(out)
    return outs


@pytest.mark.parametrize("method", ["teacache", "first_block", "mag_cache"])
@pytest.mark.parametrize("start, end, max_skips, want", [
    (0.0, 1.0, 0, "CssssssssssC"),  # the first and last steps are always computed
    (0.25, 0.75, 2, "CCCssCssCCCC"),  # before start, from end on computed; at most 2 skips in a row
    (0.0, 1.0, 1, "CsCsCsCsCsCC"),
])
def test_the_window_and_the_run_of_skips_are_every_methods(method, start, end, max_skips, want):
    from hystream.families.hunyuan_video.caches import CACHE_CONSTANTS
    from hystream.sampling.step_caches import make_step_cache

    calls = []
    settings = StepCacheSettings(method, 100.0, start, end, max_skips, mag_ratios=(1.0,) * STEPS)
    cache = make_step_cache(settings, STEPS, 720, CACHE_CONSTANTS, on_decided=lambda: calls.append("C"),
                            on_skip_rest=lambda: calls.append("s"))
    outs = drive(cache, STEPS)
    decisions = "".join("C" if d else "s" for d in cache.summary()["decisions"]["positive"])
    assert decisions == want
    assert all(torch.equal(o, torch.full((1, 4, 8), 4.0)) for o in outs)  # the cached residual, added
    assert "".join(calls) == (want if method == "first_block" else "")  # the streamer's hooks: after a pause only


@pytest.mark.parametrize("method", ["teacache", "first_block", "mag_cache"])
def test_every_method_follows_the_decision_the_ranks_agree_on(method):
    """Sequence parallelism: each rank asks `agree` (rank 0's decision) and follows it, whatever its own says."""
    from hystream.families.hunyuan_video.caches import CACHE_CONSTANTS
    from hystream.sampling.step_caches import make_step_cache

    asked = []

    def rank0_computes(skip: bool) -> bool:
        asked.append(skip)
        return False

    settings = StepCacheSettings(method, 100.0, 0.0, 1.0, 0, mag_ratios=(1.0,) * STEPS)  # alone: "CssssssssssC"
    cache = make_step_cache(settings, STEPS, 720, CACHE_CONSTANTS, agree=rank0_computes)
    drive(cache, STEPS)
    assert "".join("C" if d else "s" for d in cache.summary()["decisions"]["positive"]) == "C" * STEPS
    assert asked.count(True) == STEPS - 2  # its own decision was asked for on every step
