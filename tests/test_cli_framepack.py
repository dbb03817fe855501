"""`python -m hystream generate --framepack`: a long video from a start image with the demo's FramePack and
FramePack-F1 files, written section by section; the frame count follows --seconds and --window; the order
follows the file name; a non-FramePack DiT and a missing --vision are refused before any sampling."""

import json
import os

import pytest

from hystream.video_io import read_video
from test_cli import hystream, models  # noqa: F401  (the module's fixture)
from test_host_api import write_png


@pytest.fixture(scope="module")
def siglip(models, tmp_path_factory):  # noqa: F811
    from hystream.families.hunyuan_video_15.demo_vision import tiny_siglip, write_comfy_siglip

    return write_comfy_siglip(tiny_siglip(), str(tmp_path_factory.mktemp("clip_vision")))


def generate(models, siglip, out, dit_key="framepack_dit", *flags):  # noqa: F811
    image = write_png(os.path.join(os.path.dirname(out), "start.png"), 40, 60)
    return hystream("generate", "--framepack", "--dit", models[dit_key], "--llm", models["llm"], "--clip", models["clip"],
                    "--vae", models["vae"], "--vision", siglip, "--image", image, "--prompt", "a kite over a beach",
                    "--width", "64", "--height", "48", "--seconds", "0.5", "--window", "2", "--steps", "1",
                    "--out", out, *flags)


@pytest.mark.parametrize("dit_key, order", [("framepack_dit", "inverted"), ("framepack_f1_dit", "forward")])
def test_generate_framepack(models, siglip, tmp_path, dit_key, order):  # noqa: F811
    out = str(tmp_path / "long.mp4")
    r = generate(models, siglip, out, dit_key)
    assert r.returncode == 0, r.stderr[-3000:]
    frames, fps = read_video(out)
    # 15 frames at 30 fps, sections of 2 latent frames (5 video frames): 3 sections, 6 latent frames + the image
    assert frames.shape == (25, 48, 64, 3) and fps == 30
    assert f"(3 sections, {order})" in r.stdout
    assert "FramePack: steps 25" not in r.stderr  # --steps given: the preset leaves it


def test_refusals(models, siglip, tmp_path):  # noqa: F811
    r = generate(models, siglip, str(tmp_path / "a.mp4"), "dit")
    assert r.returncode != 0 and "FramePack" in r.stderr and "HyStreamSampler" in r.stderr
    assert not os.path.exists(tmp_path / "a.mp4")
    image = write_png(str(tmp_path / "s.png"), 40, 60)
    r = hystream("generate", "--framepack", "--dit", models["framepack_dit"], "--llm", models["llm"], "--clip",
                 models["clip"], "--vae", models["vae"], "--image", image, "--prompt", "p", "--out", str(tmp_path / "b.mp4"))
    assert r.returncode != 0 and "--vision" in r.stderr
    assert json is not None
