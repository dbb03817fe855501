"""Streamed vs resident DiT at full width, streaming from the safetensors file on disk.

Writes a random DiT with the real width (hidden 3072, 24 heads, MLP 12288, text 4096, pooled 768) and as
many blocks as asked (default 2 double + 4 single, 2.5 GB of blocks in bf16: sized to fit resident in a
24 GB box with room to spare), then in one process:
  1. streamed run (every block read from the file one block ahead): peak RSS / VRAM
  2. resident run (every block loaded once): peak RSS / VRAM
  3. timing, each model loaded alone in its own session (nothing of the other runs meanwhile), in
     alternating rounds (streamed, resident, streamed, …) so machine drift hits both: median of each
  4. cold cache: streamed forwards with the file's pages dropped from the OS cache before each one
     (posix_fadvise DONTNEED), i.e. every block read from the disk, as on a first run
and the max abs difference of the outputs (must be 0). The JSON line is printed last.

    python bench/dit_stream.py [--device cuda] [--double 2 --single 4] [--frames 2 --height 32 --width 32]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hystream.families.hunyuan_video.config import DiTConfig
from hystream.families.hunyuan_video.demo import random_dit_state_dict
from hystream.loading import load_dit
from measure import GIB, PeakRSS, drop_page_cache, median, sync, timed, trim


def write_checkpoint(folder: str, cfg: DiTConfig) -> str:
    from safetensors.torch import save_file

    path = os.path.join(folder, "hunyuan_video_fullwidth_bf16.safetensors")
    sd = random_dit_state_dict(cfg, seed=0, dtype=torch.bfloat16)
    save_file({"model.diffusion_model." + k: v for k, v in sd.items()}, path)
    del sd
    trim()
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--double", type=int, default=2)
    ap.add_argument("--single", type=int, default=4)
    ap.add_argument("--frames", type=int, default=2, help="latent frames")
    ap.add_argument("--height", type=int, default=32, help="latent height (pixels / 8)")
    ap.add_argument("--width", type=int, default=32, help="latent width (pixels / 8)")
    ap.add_argument("--text", type=int, default=64, help="valid text tokens")
    ap.add_argument("--prefetch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3, help="timed forwards per round")
    ap.add_argument("--rounds", type=int, default=2, help="alternating streamed / resident timing rounds")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    cfg = dataclasses.replace(DiTConfig(), depth_double=args.double, depth_single=args.single)
    folder = args.workdir or tempfile.mkdtemp(prefix="hystream-bench-")
    path = write_checkpoint(folder, cfg)
    g = torch.Generator().manual_seed(0)
    inputs = {"x": torch.randn(1, 16, args.frames, args.height, args.width, generator=g),
              "timestep": torch.tensor([700.0]), "txt": torch.randn(1, args.text, cfg.text_dim, generator=g),
              "pooled": torch.randn(1, cfg.pooled_dim, generator=g), "guidance": torch.tensor([6000.0])}

    def forward(dit):
        with torch.no_grad():
            return dit(**inputs)

    results = {}
    for mode, resident in (("streamed", None), ("resident", "all")):
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        with PeakRSS() as rss:
            dit = load_dit(path, device, prefetch_blocks=args.prefetch, resident_blocks=resident)
            out = forward(dit).float().cpu()
            sync(device)
        results[mode] = {"out": out, "peak_rss": rss.peak - rss.start,
                         "peak_vram": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
                         "stats": dit.stats.as_dict()}
        dit.close()
        del dit
        trim()

    times = {"streamed": [], "resident": [], "cold": []}
    stats = {}
    for _ in range(args.rounds):
        for mode, resident in (("streamed", None), ("resident", "all")):
            dit = load_dit(path, device, prefetch_blocks=args.prefetch, resident_blocks=resident)
            with dit.streamer.session():  # as the sampler runs it: one ring for all the steps
                forward(dit)  # warm-up (and the page cache)
                dit.streamer.stats.reset()
                times[mode] += [timed(lambda dit=dit: forward(dit), device) for _ in range(args.repeats)]
            stats = dit.stats.as_dict() if mode == "streamed" else stats
            dit.close()
            del dit
            trim()
    dit = load_dit(path, device, prefetch_blocks=args.prefetch)
    cold_ok = True
    for _ in range(args.repeats):
        cold_ok &= drop_page_cache(path)
        times["cold"].append(timed(lambda: forward(dit), device))
    dit.close()
    t_streamed, t_resident = times["streamed"], times["resident"]

    diff = (results["streamed"]["out"] - results["resident"]["out"]).abs().max().item()
    blocks_gb = os.path.getsize(path) / GIB
    tokens = args.frames * (args.height // 2) * (args.width // 2)
    report = {
        "bench": "dit_stream", "device": str(device), "torch_threads": torch.get_num_threads(), "hidden": cfg.hidden,
        "heads": cfg.heads, "blocks": cfg.streamed_blocks, "file_gib": round(blocks_gb, 3), "image_tokens": tokens,
        "text_tokens": args.text, "prefetch": args.prefetch, "repeats": args.repeats, "rounds": args.rounds,
        "time_streamed_s": round(median(t_streamed), 4), "time_resident_s": round(median(t_resident), 4),
        "time_ratio": round(median(t_streamed) / median(t_resident), 4),
        "time_streamed_cold_s": round(median(times["cold"]), 4) if cold_ok else None,
        "time_ratio_cold": round(median(times["cold"]) / median(t_resident), 4) if cold_ok else None,
        "peak_rss_streamed_gib": round(results["streamed"]["peak_rss"] / GIB, 3),
        "peak_rss_resident_gib": round(results["resident"]["peak_rss"] / GIB, 3),
        "peak_device_streamed_gib": round(results["streamed"]["stats"]["peak_device_bytes"] / GIB, 3),
        "peak_device_resident_gib": round(results["resident"]["stats"]["peak_device_bytes"] / GIB, 3),
        "wait_s_per_forward": round(stats["wait_seconds"] / max(1, stats["forwards"]), 4),
        "copied_gib_per_forward": round(stats["bytes_copied"] / max(1, stats["forwards"]) / GIB, 3),
        "max_abs_diff": diff,
    }
    if device.type == "cuda":
        report["peak_vram_streamed_gib"] = round(results["streamed"]["peak_vram"] / GIB, 3)
        report["peak_vram_resident_gib"] = round(results["resident"]["peak_vram"] / GIB, 3)
    for k, v in report.items():
        print(f"{k:28s} {v}")
    if not args.workdir:
        os.remove(path)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
