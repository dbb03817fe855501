"""The headless CLI: generate (T2V, LoRA, V2V) with real-layout files, clear errors without a traceback,
the demo through the real ComfyUI, and the streaming smoke check."""

import json
import os
import subprocess
import sys

import pytest
import torch

from hystream.demo import build_models
from hystream.video_io import read_video, write_mp4


def hystream(*args, cwd=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "hystream", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return build_models(str(tmp_path_factory.mktemp("cli_models")))


def test_generate_text_to_video_with_lora(models, tmp_path):
    out = tmp_path / "fox.mp4"
    r = hystream("generate", "--dit", models["dit"], "--llm", models["llm"], "--clip", models["clip"],
                 "--vae", models["vae"], "--prompt", "a fox in the snow", "--width", "64", "--height", "48",
                 "--frames", "9", "--steps", "3", "--lora", f"{models['lora']}:0.8", "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    frames, fps = read_video(str(out))
    assert frames.shape == (9, 48, 64, 3) and fps == 24.0
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert [s["stage"] for s in report["stages"]] == ["text encode", "sample", "decode"]
    sample = report["stages"][1]
    assert sample["blocks_streamed"] == 7 and sample["streamed_gib"] > 0  # 1 refiner + 2 double + 4 single
    assert json.load(open(tmp_path / "fox.report.json"))["frames"] == 9
    assert "sampling: 100%" in r.stderr  # tqdm progress


def test_generate_video_to_video(models, tmp_path):
    clip = torch.rand(12, 56, 70, 3)
    src = write_mp4(clip, str(tmp_path / "in.mp4"))
    out = tmp_path / "v2v.mp4"
    r = hystream("generate", "--dit", models["dit"], "--llm", models["llm"], "--clip", models["clip"],
                 "--vae", models["vae"], "--prompt", "a fox", "--input-video", src, "--denoise", "0.5",
                 "--steps", "4", "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    frames, _ = read_video(str(out))
    assert frames.shape == (9, 48, 64, 3)  # 12 frames of 70×56 cropped to 9 of 64×48
    assert "cropped the video" in r.stderr


def test_bad_input_is_a_message_not_a_traceback(models, tmp_path):
    r = hystream("generate", "--dit", models["dit"], "--llm", models["llm"], "--clip", models["clip"],
                 "--vae", models["vae"], "--prompt", "x", "--width", "500", "--out", str(tmp_path / "x.mp4"))
    assert r.returncode == 2
    assert "width 500" in r.stderr and "multiples of 16" in r.stderr and "Traceback" not in r.stderr
    r = hystream("generate", "--dit", models["vae"], "--llm", models["llm"], "--clip", models["clip"],
                 "--vae", models["vae"], "--prompt", "x", "--width", "64", "--height", "48", "--frames", "5",
                 "--out", str(tmp_path / "x.mp4"))
    assert r.returncode == 2 and "VAE" in r.stderr and "Traceback" not in r.stderr


def test_demo_through_the_real_comfyui(comfy_snapshot, tmp_path):
    r = hystream("demo", "--out", str(tmp_path / "demo"), timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["host"] and report["frames"] == 17 and (report["width"], report["height"]) == (128, 96)
    assert "HyStream sampler: 8 steps" in report["sampler_log"]
    assert os.path.exists(tmp_path / "demo" / "hystream_demo.mp4")


def test_smoke():
    r = hystream("smoke")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["identical"] is True
