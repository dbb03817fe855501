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
    assert fits.fits and "blocks resident" in fits.settings and fits.total <= 8 * GIB
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
