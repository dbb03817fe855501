"""The memory planner: per-stage figures from the real classes, the brief's targets, budgets that do
and do not fit, and the CLI."""

import json
import subprocess
import sys

from hystream import planner

GIB = 1024 ** 3


def test_brief_targets_at_real_sizes():
    """DiT stage (ring of 2 streamed blocks + activations): ≤ 6 / 4 / 3 / 2 GiB; text encoder ≤ 2 GiB;
    VAE decode ≤ 4 GiB at 720×1280×129 with the default tiles."""
    for (w, h, f), target in (((1280, 720, 129), 6), ((960, 544, 129), 4), ((768, 512, 121), 3), ((512, 384, 129), 2)):
        dit = planner.plan_dit(w, h, f, None)
        assert dit.total <= target * GIB, (w, h, f, dit.total / GIB)
    assert planner.plan_text_encoder(None, fp8=False).total <= 2 * GIB
    assert planner.plan_vae(1280, 720, 129, None).total <= 4 * GIB


def test_budgets():
    fits = planner.plan_dit(848, 480, 61, 8 * GIB)
    assert fits.fits and "units resident" in fits.settings and fits.total <= 8 * GIB
    more = planner.plan_dit(848, 480, 61, 24 * GIB)
    assert int(more.settings.split("prefetch 1, ")[1].split("/")[0]) > int(fits.settings.split("prefetch 1, ")[1].split("/")[0])
    tight = planner.plan_dit(1280, 720, 129, 2 * GIB)
    assert tight.fits is False and "needs" in tight.settings and "fp8" in tight.settings
    fp8 = planner.plan_dit(1280, 720, 129, None, weight_dtype="fp8_e4m3fn")
    assert fp8.weights < planner.plan_dit(1280, 720, 129, None).weights
    small_vae = planner.plan_vae(1280, 720, 129, int(2.5 * GIB))
    assert small_vae.fits and "tiles 256" not in small_vae.settings


def test_cli_plan():
    r = subprocess.run([sys.executable, "-m", "hystream", "plan", "--width", "848", "--height", "480",
                        "--frames", "61", "--vram", "6"], capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "HyStream memory plan for 848×480, 61 frames" in r.stdout
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["fits"] is True and [s["stage"] for s in report["stages"]] == ["text encoder", "DiT", "VAE decode"]
    r = subprocess.run([sys.executable, "-m", "hystream", "plan", "--width", "500"], capture_output=True, text=True,
                       check=False)
    assert r.returncode == 2 and "width 500" in r.stderr


def test_the_vae_never_sets_the_cards_size():
    """plan_all picks the VAE's tiles under the DiT stage's need (issue 24): the largest candidate that fits
    it, the next larger one would not; the settings say so. The fixed defaults alone need 3.69 GiB at any size."""
    from hystream.vae.tiling import TileSpec

    for (w, h, f), vram in (((512, 384, 129), None), ((1280, 720, 129), None), ((1280, 720, 129), 4.0)):
        _, dit, vae = planner.plan_all(w, h, f, vram)
        assert vae.total <= dit.total, (w, h, f, vram, vae.total / GIB, dit.total / GIB)
    _, dit, vae = planner.plan_all(512, 384, 129, None)
    assert "tiles 128 px" in vae.settings and "within the DiT stage" in vae.settings
    larger = planner.plan_vae(512, 384, 129, None, spec=TileSpec(192, 48, 64, 16))
    assert larger.total > dit.total
    assert planner.plan_vae(512, 384, 129, None).total > dit.total  # the old answer: the default tiles


def test_a_4_gib_card_runs_720p_with_the_copies_overlapping():
    """issue 24: `plan --vram 4` at 720 × 1280 × 129 counts the CUDA context and the budget margin, fits every
    stage with prefetch ≥ 1, and plans what the loaders' automatic budget then plans on that card."""
    from hystream.families import registry
    from hystream.offload.budget import Budget
    from hystream.offload.settings import StreamSettings

    budget, context, margin = planner.card_budget(4)
    assert context > 0 and margin > 0 and budget == 4 * GIB - context - margin
    text, dit, vae = planner.plan_all(1280, 720, 129, 4)
    assert all(p.fits for p in (text, dit, vae)) and max(p.total for p in (text, dit, vae)) <= budget
    assert dit.settings.startswith("prefetch 1,"), dit.settings
    # the streamer's automatic budget on a card whose free memory is what the CUDA context leaves
    units, fixed = planner.dit_weights(registry.default(), "bf16")

    class Card:
        def free_bytes(self, reserve):
            return 4 * GIB - context - reserve

    auto = Budget(StreamSettings(prefetch=1, budget_bytes=0, fixed_bytes=fixed, what="the DiT"), Card(), units)
    plan = auto.plan(dit.activations, 0)
    assert plan.prefetch == 1 and plan.total_bytes == dit.total
    assert f"prefetch {plan.prefetch}, {len(plan.resident)}/{len(units)} streamed units resident" in dit.settings
    # a card that only fits without overlap says so instead of promising full speed
    tight = planner.plan_dit(1280, 720, 129, dit.total - 2 * max(units) + max(units) + 1)
    assert tight.fits and tight.settings.startswith("prefetch 0 only"), tight.settings
