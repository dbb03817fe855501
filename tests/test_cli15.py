"""The CLI on HunyuanVideo 1.5's files: generate reads the family and the variant's preset from the DiT (480p
T2V: 50 steps, shift 5, cfg 6 with the reference's empty negative), image-to-video with SigLIP (--vision);
plan --family; the presets per variant."""

import json
import os
import subprocess
import sys

import pytest

from hystream.families.base import SamplerDefaults
from hystream.families.hunyuan_video_15.demo import build_models
from hystream.families.hunyuan_video_15.presets import preset
from hystream.video_io import read_video


def hystream(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "hystream", *args], capture_output=True, text=True, timeout=timeout,
                          check=False)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return build_models(str(tmp_path_factory.mktemp("cli15")))


def generate(models, tmp_path, *extra, dit="dit"):
    return hystream("generate", "--dit", models[dit], "--llm", models["llm"], "--clip", models["clip"],
                    "--vae", models["vae"], "--prompt", 'a fox under a sign reading "OPEN"', "--width", "64",
                    "--height", "48", "--frames", "9", "--out", str(tmp_path / "out.mp4"), *extra)


def test_generate_takes_the_variants_preset(models, tmp_path):
    r = generate(models, tmp_path, "--steps", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "480p_t2v: flow shift 5, cfg 6" in r.stderr  # the rest from the preset, --steps as given
    assert read_video(str(tmp_path / "out.mp4"))[0].shape == (9, 48, 64, 3)
    sample = json.loads(r.stdout.strip().splitlines()[-1])["stages"][1]
    assert sample["forwards"] == 2 * 2  # cfg 6: a positive and a negative pass per step
    r = generate(models, tmp_path, "--steps", "2", "--cfg", "1")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["stages"][1]["forwards"] == 2


def test_generate_image_to_video_with_siglip(models, tmp_path):
    from test_host_api import write_png

    start = write_png(str(tmp_path / "start.png"), 40, 80)
    r = generate(models, tmp_path, "--steps", "1", "--image", start, "--vision", models["vision"], dit="i2v_dit")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "480p_i2v" in r.stderr and "without its SigLIP states" not in r.stderr
    assert [s["stage"] for s in json.loads(r.stdout.strip().splitlines()[-1])["stages"]] == [
        "text encode", "image encode", "sample", "decode"]
    r = generate(models, tmp_path, "--steps", "1", "--image", start, dit="i2v_dit")
    assert r.returncode == 0 and "without its SigLIP states" in r.stderr  # runs, and says what it lacks


def test_plan_knows_the_family():
    r = hystream("plan", "--family", "hunyuanvideo15", "--width", "1280", "--height", "720", "--frames", "121")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["family"] == "hunyuan_video_15" and "qwen_2.5_vl" in report["stages"][0]["settings"]
    assert max(s["total"] for s in report["stages"]) < 3 * 1024 ** 3
    r = hystream("plan", "--family", "hunyuanvideo3")
    assert r.returncode == 2 and "hunyuan_video_15" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize(("name", "meanflow", "want"), [
    ("hunyuanvideo1.5_480p_t2v_fp16.safetensors", False, ("480p_t2v", 50, 5.0, 6.0)),
    ("hunyuanvideo1.5_480p_i2v_fp16.safetensors", False, ("480p_i2v", 50, 5.0, 6.0)),
    ("hunyuanvideo1.5_720p_t2v_fp16.safetensors", False, ("720p_t2v", 50, 9.0, 6.0)),
    ("hunyuanvideo1.5_720p_i2v_cfg_distilled_fp8_scaled.safetensors", False, ("720p_i2v_cfg_distilled", 50, 7.0, 1.0)),
    ("hunyuanvideo1.5_480p_t2v_cfg_distilled-Q4_K_M.gguf", False, ("480p_t2v_cfg_distilled", 50, 5.0, 1.0)),
    ("hunyuanvideo1.5_480p_i2v_step_distilled_fp16.safetensors", True, ("480p_i2v_step_distilled", 12, 7.0, 1.0)),
    ("my_renamed_model.safetensors", True, ("480p_t2v_step_distilled", 12, 7.0, 1.0)),  # MeanFlow: from the weights
    (os.path.join("HunyuanVideo-1.5", "transformer", "720p_i2v", "diffusion_pytorch_model.safetensors"), False,
     ("720p_i2v", 50, 7.0, 6.0)),
])
def test_presets_per_variant(name, meanflow, want):
    variant, settings = preset(name, meanflow)
    assert (variant, settings.steps, settings.flow_shift, settings.cfg) == want
    assert isinstance(settings, SamplerDefaults) and settings.embedded_guidance is None
