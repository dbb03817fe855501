"""The headless CLI: generate (T2V, LoRA, V2V) with real-layout files, clear errors without a traceback,
the demo through the real ComfyUI, and the streaming smoke check."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch

from hystream.families.hunyuan_video.demo import build_models
from hystream.video_io import read_video, write_mp4


def hystream(*args, cwd=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "hystream", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, check=False)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return build_models(str(tmp_path_factory.mktemp("cli_models")))


def generate_fox(models, out, *flags):
    return hystream("generate", "--dit", models["dit"], "--llm", models["llm"], "--clip", models["clip"],
                    "--vae", models["vae"], "--prompt", "a fox in the snow", "--width", "64", "--height", "48",
                    "--frames", "9", "--steps", "3", *flags, "--out", str(out))


def test_generate_text_to_video_with_lora(models, tmp_path):
    out = tmp_path / "fox.mp4"
    r = generate_fox(models, out, "--lora", f"{models['lora']}:0.8")
    assert r.returncode == 0, r.stderr[-3000:]
    frames, fps = read_video(str(out))
    assert frames.shape == (9, 48, 64, 3) and fps == 24.0
    assert torch.isfinite(frames).all() and frames.std() > 0.01  # a picture, not a flat or broken one
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert [s["stage"] for s in report["stages"]] == ["text encode", "sample", "decode"]
    sample = report["stages"][1]
    # streamed units: 1 refiner block matrix by matrix (7), 2 double blocks in 4 parts, 4 single blocks whole
    assert sample["blocks_streamed"] == 7 + 2 * 4 + 4 and sample["streamed_gib"] > 0
    assert json.loads((tmp_path / "fox.report.json").read_text())["frames"] == 9
    assert "sampling: 100%" in r.stderr  # tqdm progress
    # the LoRA changed the video; at strength 0 it is the same video as without it, bit for bit
    others = {}
    for name, flags in (("plain", ()), ("zero", ("--lora", f"{models['lora']}:0"))):
        r = generate_fox(models, tmp_path / f"{name}.mp4", *flags)
        assert r.returncode == 0, r.stderr[-3000:]
        others[name] = read_video(str(tmp_path / f"{name}.mp4"))[0]
    assert not torch.equal(frames, others["plain"])
    assert torch.equal(others["zero"], others["plain"])


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


def test_smoke_compares_a_streamed_run_with_a_resident_one(tmp_path):
    """`smoke` exits non-zero when the two outputs differ; here, that the two runs it compares really are a
    streamed and a resident one, of a DiT it wrote where asked, at the size asked."""
    from safetensors import safe_open

    r = hystream("smoke", "--out", str(tmp_path), "--width", "64", "--height", "48")
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert os.path.dirname(report["file"]) == str(tmp_path)
    with safe_open(report["file"], "pt") as f:
        names = list(f.keys())
    assert any(".single_blocks." in k for k in names)  # a DiT checkpoint
    assert report["shape"] == [1, 16, 2, 48 // 8, 64 // 8]  # the latent of the requested size
    assert report["streamed_blocks_streamed"] == report["streamed_blocks_total"] > 0 and report["streamed_bytes_copied"] > 0
    resident = re.search(r"^resident .*?(\d+)/(\d+) blocks resident, 0 streamed", r.stdout, re.MULTILINE)
    assert resident and resident.group(1) == resident.group(2) == str(report["streamed_blocks_total"]), r.stdout
    assert report["identical"] is True


def test_every_subcommand_help_renders_with_a_line_per_flag():
    """`--help` of every subcommand renders (a stray % in a help string crashes argparse), and every flag
    says what it does."""
    from hystream.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert set(sub.choices) >= {"generate", "demo", "plan", "smoke"}
    for name in [None, *sub.choices]:
        r = hystream(*([name] if name else []), "--help")
        assert r.returncode == 0 and "usage:" in r.stdout and "Traceback" not in r.stderr, (name, r.stderr[-2000:])
    for name, p in sub.choices.items():
        for action in p._actions:
            if action.dest != "help":
                assert action.help and action.help.strip(), f"{name} {action.option_strings} has no help line"
    assert "(default: 848)" in hystream("generate", "--help").stdout


@pytest.mark.parametrize("flags, words", [
    (["--out", "video.avi"], ["ending in .mp4"]),
    (["--fps", "0"], ["fps above 0"]),
    (["--crf", "99"], ["crf a whole number"]),
    (["--tile", "20"], ["tile_size"]),
    (["--temporal-overlap", "48"], ["temporal_overlap"]),
    (["--steps", "0"], ["--steps at least 1"]),
    (["--cfg", "3"], ["--negative"]),
    (["--denoise", "1.5"], ["--denoise from 0 to 1"]),
    (["--tokenizer-dir", "/nonexistent/tok"], ["--tokenizer-dir"]),
    (["--lora", "/nonexistent/l.safetensors:1"], ["no file at"]),
    (["--input-video", "__BAD_VIDEO__"], ["a video ffmpeg can read"]),
])
def test_generate_checks_its_settings_before_any_model_work(models, tmp_path, flags, words):
    """Bad settings fail in a second with our message, before a model is opened: the text encoder file
    given here is empty, so any model work would fail on it first."""
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    flags = [str(tmp_path / "bad.mp4") if f == "__BAD_VIDEO__" else f for f in flags]
    args = ["generate", "--dit", models["dit"], "--llm", str(empty), "--clip", models["clip"], "--vae", models["vae"],
            "--prompt", "x", "--width", "64", "--height", "48", "--frames", "5", "--out", str(tmp_path / "o.mp4")]
    r = hystream(*args, *flags)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert all(w in r.stderr for w in words), r.stderr
    assert "empty.safetensors" not in r.stderr  # the model files were never opened


def test_cli_finds_comfyuis_bundled_tokenizers(models, tmp_path):
    """A ComfyUI user's text encoders have no tokenizer beside them: `generate` looks in the ComfyUI that
    holds the pack (custom_nodes/) or in $COMFYUI_PATH, as the nodes do."""
    import shutil

    from hystream.families.hunyuan_video.demo import write_tiny_clip_tokenizer, write_tiny_llama_tokenizer

    te = tmp_path / "text_encoders"
    te.mkdir()
    for key in ("llm", "clip"):
        shutil.copy(models[key], te / os.path.basename(models[key]))
    comfy = tmp_path / "ComfyUI"
    (comfy / "custom_nodes").mkdir(parents=True)
    (comfy / "main.py").write_text("# stand-in\n")
    write_tiny_llama_tokenizer(str(comfy / "comfy" / "text_encoders" / "llama_tokenizer"))
    write_tiny_clip_tokenizer(str(comfy / "comfy" / "sd1_tokenizer"))
    args = ["generate", "--dit", models["dit"], "--llm", str(te / os.path.basename(models["llm"])),
            "--clip", str(te / os.path.basename(models["clip"])), "--vae", models["vae"], "--prompt", "a fox",
            "--width", "32", "--height", "32", "--frames", "1", "--steps", "1"]
    r = hystream(*args, "--out", str(tmp_path / "none.mp4"))
    assert r.returncode == 2 and "tokenizer" in r.stderr  # nowhere to find them yet
    env = dict(os.environ, COMFYUI_PATH=str(comfy))
    r = subprocess.run([sys.executable, "-m", "hystream", *args, "--out", str(tmp_path / "env.mp4")],
                       capture_output=True, text=True, env=env, timeout=600, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    import hystream as pack

    os.symlink(os.path.dirname(pack.__file__), comfy / "custom_nodes" / "hystream")
    r = subprocess.run([sys.executable, "-m", "hystream", *args, "--out", str(tmp_path / "nodes.mp4")],
                       capture_output=True, text=True, cwd=str(comfy / "custom_nodes"), timeout=600,
                       env={k: v for k, v in os.environ.items() if k != "COMFYUI_PATH"}, check=False)
    assert r.returncode == 0, r.stderr[-2000:]


def test_generate_with_a_gguf_dit_streams_fewer_bytes(models, tmp_path):
    from safetensors.torch import load_file

    from tiny_gguf import dit_types, write_gguf

    prefix = "model.diffusion_model."
    sd = {k.removeprefix(prefix): v.float() for k, v in load_file(models["dit"]).items()}
    gguf_path = write_gguf(str(tmp_path / "hunyuan-video-t2v-720p-Q4_K_M.gguf"), dit_types(sd))
    reports = {}
    for name, dit in (("bf16", models["dit"]), ("gguf", gguf_path)):
        out = tmp_path / f"{name}.mp4"
        r = hystream("generate", "--dit", dit, "--llm", models["llm"], "--clip", models["clip"], "--vae", models["vae"],
                     "--prompt", "a fox", "--width", "48", "--height", "32", "--frames", "5", "--steps", "2",
                     "--out", str(out))
        assert r.returncode == 0, r.stderr[-3000:]
        assert read_video(str(out))[0].shape == (5, 32, 48, 3)
        reports[name] = json.loads(r.stdout.strip().splitlines()[-1])["stages"][1]
    assert reports["gguf"]["blocks_streamed"] == reports["bf16"]["blocks_streamed"] == 7 + 2 * 4 + 4
    assert 0 < reports["gguf"]["streamed_gib"] < 0.6 * reports["bf16"]["streamed_gib"]


def test_generate_image_to_video(models, tmp_path):
    from test_host_api import write_png

    start = write_png(str(tmp_path / "start.png"), 40, 80)
    out = tmp_path / "i2v.mp4"
    args = ["generate", "--dit", models["i2v_dit"], "--llm", models["llm"], "--clip", models["clip"], "--vae",
            models["vae"], "--prompt", "the fox runs", "--width", "48", "--height", "32", "--frames", "9", "--steps", "2"]
    r = hystream(*args, "--image", start, "--vision", models["vision"], "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    assert read_video(str(out))[0].shape == (9 - 4, 32, 48, 3)  # the latent-concat reference drops 4 frames
    assert "cropped to 60x40" in r.stderr
    assert [s["stage"] for s in json.loads(r.stdout.strip().splitlines()[-1])["stages"]] == [
        "text encode", "image encode", "sample", "decode"]

    missing = hystream(*args, "--out", str(tmp_path / "x.mp4"))
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert "start image" in missing.stderr and "33 input channels" in missing.stderr

    no_vision = hystream(*args, "--image", start, "--out", str(tmp_path / "z.mp4"))
    assert no_vision.returncode != 0 and "Traceback" not in no_vision.stderr and "--vision" in no_vision.stderr

    bad = tmp_path / "not_an_image.png"
    bad.write_bytes(b"nope")
    r = hystream(*args, "--image", str(bad), "--vision", models["vision"], "--out", str(tmp_path / "y.mp4"))
    assert r.returncode != 0 and "Traceback" not in r.stderr and "still image" in r.stderr


HEAP_CHILD = """
import sys, torch
from hystream.cli import return_freed_memory_to_the_os
if sys.argv[1] == "on":
    return_freed_memory_to_the_os()
def rss():
    return int(dict(l.split(":", 1) for l in open("/proc/self/status"))["VmRSS"].split()[0]) * 1024
t = torch.ones(24 * 2**18)  # 24 MiB, freed: glibc raises its mmap threshold to it
del t
base = rss()
stage = [torch.ones(16 * 2**18) for _ in range(40)]  # a stage's 640 MiB of 16 MiB tensors
keep = torch.ones(16 * 2**18)  # the next stage's first tensor, allocated after them, still alive
del stage
print(rss() - base - keep.numel() * 4)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="Linux only")
def test_the_cli_gives_a_stages_freed_memory_back_to_the_os():
    """Between stages the freed tensors must leave the process, or the next stage's peak sits on top of them
    (the full-size run's peak RSS). With glibc's default dynamic threshold they stay in the heap ("off")."""
    import ctypes.util

    if "libc.so.6" not in str(ctypes.util.find_library("c")):
        pytest.skip("glibc only")
    left = {mode: int(subprocess.run([sys.executable, "-c", HEAP_CHILD, mode], capture_output=True, text=True,
                                     timeout=120, check=True).stdout.split()[-1]) for mode in ("on", "off")}
    assert left["on"] < 64 * 2**20, left
    assert left["off"] > 400 * 2**20, left  # the mechanism this guards against, on this libc
