"""gpu_check sections on the full-width DiT (hidden 3072, 24 heads, 2 double + 2 single blocks + the token
refiner's 2): dit_file, dit_streamed_vs_resident, and the same under PyTorch's cudaMallocAsync backend.

At ≥ 16k image tokens a block's compute is comparable to its copy, so the time ratio measures the overlap;
at a thousand tokens a block copy dwarfs its compute and the ratio would measure the bus alone."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile

import torch

from measure import GIB, median, timed

GPU_POINTS = {"16k_tokens": (16, 64, 64), "720p": (33, 90, 160)}  # latent (t, h, w): 16,384 / 118,800 tokens
CPU_POINTS = {"tiny": (1, 8, 8)}
GPU_CHECK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gpu_check.py")
ASYNC_ALLOC = "backend:cudaMallocAsync"  # ComfyUI's default


def dit_config(small: bool):
    from hystream.families.hunyuan_video.config import DiTConfig
    from hystream.families.hunyuan_video.demo import TINY_DIT

    return dataclasses.replace(TINY_DIT if small else DiTConfig(), depth_double=2, depth_single=2)


def dit_file(ctx, share) -> dict:
    from safetensors.torch import save_file

    from hystream.families.hunyuan_video.demo import random_dit_state_dict

    cfg = dit_config(ctx.small)
    path = os.path.join(ctx.folder, "dit_bf16.safetensors")
    sd = random_dit_state_dict(cfg, dtype=torch.bfloat16)
    save_file({"model.diffusion_model." + k: v for k, v in sd.items()}, path)
    del sd
    ctx.dit_path = path
    return {"gib": round(os.path.getsize(path) / GIB, 3), "hidden": cfg.hidden, "heads": cfg.heads,
            "double_blocks": cfg.depth_double, "single_blocks": cfg.depth_single, "refiner_blocks": cfg.depth_refiner}


def dit_inputs(cfg, latent: tuple, text: int, device) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"x": torch.randn(1, 16, *latent, generator=g).to(device), "timestep": torch.tensor([700.0]),
            "txt": torch.randn(1, text, cfg.text_dim, generator=g).to(device),
            "pooled": torch.randn(1, cfg.pooled_dim, generator=g).to(device), "guidance": torch.tensor([6000.0])}


def run_mode(ctx, latent, text, resident, seconds) -> dict:
    """One model alone: a warm-up forward, then timed forwards in one session (as a sampling loop runs)."""
    from hystream.loading import load_dit

    dev = ctx.device
    dit = load_dit(ctx.dit_path, dev, prefetch_blocks=1, resident_blocks=resident, host_tier="pinned")
    try:
        inputs = dit_inputs(dit.config, latent, text, dev)
        with torch.no_grad():
            first = timed(lambda: dit(**inputs), dev)  # its own session: its stalls are not counted below
            dit.streamer.stats.reset()
            reps = 1 if ctx.small else max(1, min(5, int(seconds / (2 * first))))  # the dry run times nothing
            with dit.streamer.session():
                times = [timed(lambda: dit(**inputs), dev) for _ in range(reps)]
                out = dit(**inputs).float().cpu()
        return {"out": out, "time": median(times), "reps": reps, "stats": dit.stats.as_dict(),
                "kernel": dit.model.attention_kernel(), "dtype": str(dit.model.compute_dtype)}
    finally:
        dit.close()


def compare(ctx, latent, text, seconds) -> dict:
    streamed = run_mode(ctx, latent, text, None, seconds / 2)
    resident = run_mode(ctx, latent, text, "all", seconds / 2)
    s, diff = streamed["stats"], (streamed["out"] - resident["out"]).abs()
    per_block = max(1, s["copies"])
    return {"image_tokens": latent[0] * latent[1] * latent[2] // 4, "text_tokens": text,
            "identical": bool(torch.equal(streamed["out"], resident["out"])),
            "max_abs_diff": float(diff.max()), "time_streamed_s": round(streamed["time"], 4),
            "time_resident_s": round(resident["time"], 4), "time_ratio": round(streamed["time"] / resident["time"], 4),
            "reps": streamed["reps"], "stall_ms_per_block": round(1000 * s["stall_seconds"] / per_block, 3),
            "host_wait_ms_per_block": round(1000 * s["wait_seconds"] / per_block, 3), "copies": s["copies"],
            "bytes_copied": s["bytes_copied"], "attention_kernel": streamed["kernel"],
            "compute_dtype": streamed["dtype"]}


def streamed_vs_resident(ctx, share) -> dict:
    """Streamed (prefetch 1, pinned) vs resident, each at 16k image tokens and a 720p-sized point."""
    if ctx.dit_path is None:
        return {"skipped": "no DiT file (see dit_file)"}
    points = CPU_POINTS if ctx.small else GPU_POINTS
    text = 16 if ctx.small else 256
    result = {"allocator_backend": torch.cuda.get_allocator_backend() if ctx.device.type == "cuda" else None}
    for i, (name, latent) in enumerate(points.items()):
        if i and share.left() <= 0:
            result[name] = {"skipped": "time budget spent"}
            continue
        try:  # the first point gets 40 % of the share, the 720p point the rest
            result[name] = compare(ctx, latent, text, share.left() * (0.4 if i == 0 and len(points) > 1 else 1.0))
        except torch.OutOfMemoryError as e:
            result[name] = {"skipped": f"out of memory at this size: {str(e).splitlines()[0][:200]}"}
    return result


def read_report(out_dir: str) -> dict:
    try:
        with open(os.path.join(out_dir, "gpu_check.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def async_allocator(ctx, share) -> dict:
    """dit_streamed_vs_resident again in a subprocess whose allocator is cudaMallocAsync: the setting must be
    in the environment before CUDA initialises, so not in this process."""
    if ctx.dit_path is None:
        return {"skipped": "no DiT file (see dit_file)"}
    out_dir = tempfile.mkdtemp(prefix="async-allocator-", dir=ctx.folder)
    budget = max(1, int(share.left()) - 15)  # the child's interpreter and CUDA start-up come out of the share
    cmd = [sys.executable, GPU_CHECK, "--device", ctx.device.type, "--only-section", "dit_streamed_vs_resident",
           "--dit-file", ctx.dit_path, "--budget-s", str(budget), "--out", out_dir]
    env = dict(os.environ, PYTORCH_CUDA_ALLOC_CONF=ASYNC_ALLOC)
    try:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=budget + 120, check=False)
        code, stderr = r.returncode, r.stderr
    except subprocess.TimeoutExpired as e:
        code, stderr = "timed out", e.stderr if isinstance(e.stderr, str) else (e.stderr or b"").decode(errors="ignore")
    figures = dict(read_report(out_dir).get("sections", {}).get("dit_streamed_vs_resident", {}))
    figures["returncode"] = code
    if code != 0 or len(figures) == 1 or "error" in figures:
        figures.setdefault("error", f"the subprocess ended with {code}")
        figures["stderr_tail"] = stderr[-1500:]
    elif ctx.device.type == "cuda" and figures.get("allocator_backend") != "cudaMallocAsync":
        figures["error"] = f"the subprocess ran with {figures.get('allocator_backend')}, not cudaMallocAsync"
    return figures
