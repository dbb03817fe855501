"""`torchrun --nproc-per-node 2 -m hystream generate …` on CPU ranks (gloo, 127.0.0.1): the ranks share the DiT's
tokens and rank 0 writes the video, frame for frame the one-process video (its latents are bit-identical, so
decode and encode are too), FramePack's long videos too; 3 ranks for 2 heads through ring attention."""

import json
import os
import subprocess
import sys

import pytest
import torch

from hystream.families.hunyuan_video.demo import build_models
from hystream.video_io import read_video
from ranks import free_port

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}  # one thread per rank, as torchrun sets


def launch(ranks: int, *args):
    runner = [sys.executable, "-m", "hystream"] if ranks == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(ranks),
        "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "-m", "hystream"]
    return subprocess.run([*runner, *args], capture_output=True, text=True, env=ENV, timeout=600, check=False)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return build_models(str(tmp_path_factory.mktemp("ranks_models")))


def generate(models, out, *flags):
    return ("generate", "--dit", models["dit"], "--llm", models["llm"], "--clip", models["clip"], "--vae", models["vae"],
            "--prompt", "a fox in the snow", "--width", "64", "--height", "48", "--frames", "9", "--steps", "3",
            "--device", "cpu", *flags, "--out", str(out))


@pytest.mark.parametrize("flags,tiles_here", [
    ((), 1),  # one VAE tile: rank 0 decodes it
    (("--cfg", "3", "--negative", "blurry", "--step-cache", "first_block", "--cache-threshold", "0.5",
      "--cache-start", "0", "--tile", "32", "--tile-overlap", "16"), 3)],  # 6 tiles: 3 each
    ids=["plain", "cfg + first-block cache + VAE tiles"])
def test_two_ranks_write_the_one_process_video(models, tmp_path, flags, tiles_here):
    one = launch(1, *generate(models, tmp_path / "one.mp4", *flags))
    assert one.returncode == 0, one.stderr[-3000:]
    two = launch(2, *generate(models, tmp_path / "two.mp4", *flags))
    assert two.returncode == 0, two.stderr[-3000:]
    a, _ = read_video(str(tmp_path / "one.mp4"))
    b, _ = read_video(str(tmp_path / "two.mp4"))
    assert a.shape == b.shape == (9, 48, 64, 3)
    assert torch.equal(a, b), f"frames differ by up to {(a.float() - b.float()).abs().max().item()}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.mp4", "one.report.json", "two.mp4", "two.report.json"]
    stages = {s["stage"]: s for s in json.loads((tmp_path / "two.report.json").read_text())["stages"]}
    assert stages["sample"]["ranks"] == {"ranks": 2, "image_tokens": 36, "per_rank": 18, "attention": "ulysses 2"}  # 3 × 6 × 8 latent tokens
    assert stages["decode"]["tiles_here"] == tiles_here  # rank 0's share of the VAE tiles


@pytest.mark.parametrize("dit_key", ["framepack_dit", "framepack_f1_dit"])
def test_two_ranks_write_the_one_process_framepack_video(models, tmp_path, dit_key):
    from hystream.families.hunyuan_video_15.demo_vision import tiny_siglip, write_comfy_siglip
    from test_host_api import write_png

    siglip = write_comfy_siglip(tiny_siglip(), str(tmp_path / "clip_vision"))
    image = write_png(str(tmp_path / "start.png"), 40, 60)
    videos = []
    for ranks in (1, 2):
        out = tmp_path / f"long{ranks}.mp4"
        run = launch(ranks, "generate", "--framepack", "--dit", models[dit_key], "--llm", models["llm"], "--clip",
                     models["clip"], "--vae", models["vae"], "--vision", siglip, "--image", image, "--prompt", "a kite",
                     "--width", "64", "--height", "48", "--seconds", "0.5", "--window", "2", "--steps", "2",
                     "--device", "cpu", "--out", str(out))
        assert run.returncode == 0, run.stderr[-3000:]
        videos.append(read_video(str(out))[0])
    assert videos[0].shape == videos[1].shape == (25, 48, 64, 3)  # 3 sections
    assert torch.equal(videos[0], videos[1]), f"differ by {(videos[0].float() - videos[1].float()).abs().max()}"
    stage = json.loads((tmp_path / "long2.report.json").read_text())["stages"][-1]
    assert stage["ranks"]["ranks"] == 2 and stage["ranks"]["per_rank"] * 2 >= stage["ranks"]["image_tokens"] > \
        stage["ranks"]["per_rank"]  # the last section's tokens (history + window), shared


def test_three_ranks_share_two_heads_through_ring_attention(models, tmp_path):
    """2 heads over 3 ranks: no head exchange divides them, so the keys go round a ring; the latents are the
    one-process ones within rounding, so the video is too (within a level of an 8-bit frame); First-Block Cache
    decides on rank 0 from the whole sequence, as alone."""
    videos = []
    for ranks in (1, 3):
        run = launch(ranks, *generate(models, tmp_path / f"r{ranks}.mp4", "--cfg", "3", "--negative", "blurry",
                                      "--step-cache", "first_block", "--cache-threshold", "0.5", "--cache-start", "0"))
        assert run.returncode == 0, run.stderr[-3000:]
        videos.append(read_video(str(tmp_path / f"r{ranks}.mp4"))[0].float())
    assert videos[0].shape == videos[1].shape == (9, 48, 64, 3)
    diff = (videos[0] - videos[1]).abs()
    print(f"ring 3 vs one process: {diff.max().item()} max, {diff.mean().item():.2e} mean levels")
    assert diff.max() <= 1 and diff.mean() < 0.01, (diff.max(), diff.mean())
    stage = json.loads((tmp_path / "r3.report.json").read_text())["stages"]
    sample = next(s for s in stage if s["stage"] == "sample")
    assert sample["ranks"] == {"ranks": 3, "image_tokens": 36, "per_rank": 12, "attention": "ring 3"}
    one = next(s for s in json.loads((tmp_path / "r1.report.json").read_text())["stages"] if s["stage"] == "sample")
    assert sample["step_cache"]["skipped"] == one["step_cache"]["skipped"]


def test_more_ranks_than_gpus_is_refused_by_every_rank(models, tmp_path):
    """torchrun with CUDA ranks on a machine with fewer GPUs: each rank refuses by name before the group starts
    (no hang on a rank that never joins)."""
    run = launch(2, *generate(models, tmp_path / "x.mp4", "--device", "cuda"))
    assert run.returncode != 0
    words = "2 GPUs (torchrun's --nproc-per-node)"
    assert words in run.stderr and "0 visible" in run.stderr, run.stderr[-2000:]
    assert "Traceback" not in run.stderr.split(words)[0][-500:]  # our message, not a traceback, says why
    assert not (tmp_path / "x.mp4").exists()
