"""CPU time of the lean blocks against the plain ones, full width (hidden 3072, 24 heads), one double and
one single block with random bf16 weights, fp32 compute as on the CPU, a small token count. Same process,
interleaved repeats, median of each; also the max abs difference of the outputs. JSON line last.

    python bench/lean_blocks.py [--tokens 1024] [--text 64] [--repeats 7]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hystream.families.hunyuan_video.config import DiTConfig
from hystream.families.hunyuan_video.demo import random_dit_state_dict
from hystream.families.hunyuan_video.dit import HunyuanVideoDiT
from hystream.models.rope import grid_rope
from hystream.offload.binding import bind
from measure import median


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=1024, help="image tokens (a 16×64 latent grid at 1024)")
    ap.add_argument("--text", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--chunk", type=int, default=0, help="lean chunk size (0 = automatic)")
    args = ap.parse_args()
    cfg = dataclasses.replace(DiTConfig(), depth_refiner=1, depth_double=1, depth_single=1)
    with torch.device("meta"):
        model = HunyuanVideoDiT(cfg)
    bind(model, random_dit_state_dict(cfg, seed=0, dtype=torch.bfloat16))
    double, single = model.double_blocks[0], model.single_blocks[0]
    g = torch.Generator().manual_seed(0)
    grid = (1, 16, args.tokens // 16)
    cos, sin = grid_rope(grid, cfg.rope_axes, cfg.rope_theta)  # as the DiT's forward makes them
    img = torch.randn(1, args.tokens, cfg.hidden, generator=g)
    txt = torch.randn(1, args.text, cfg.hidden, generator=g)
    vec = torch.randn(1, cfg.hidden, generator=g)
    chunk = args.chunk or max(1024, -(-(args.tokens + args.text) // 32))

    def run(lean: bool):
        c = chunk if lean else None
        with torch.no_grad():
            i, t = double(img.clone(), txt.clone(), vec, cos, sin, None, chunk=c)
            return single(torch.cat((i, t), 1), vec, cos, sin, args.tokens, None, chunk=c)

    run(False), run(True)  # warm-up
    times = {False: [], True: []}
    for _ in range(args.repeats):
        for lean in (False, True):
            t0 = time.perf_counter()
            out = run(lean)
            times[lean].append(time.perf_counter() - t0)
    diff = (run(True) - run(False)).abs().max().item()
    report = {"bench": "lean_blocks", "tokens": args.tokens, "text": args.text, "chunk": chunk,
              "torch_threads": torch.get_num_threads(), "plain_s": round(median(times[False]), 4),
              "lean_s": round(median(times[True]), 4),
              "time_ratio": round(median(times[True]) / median(times[False]), 4), "max_abs_diff": diff,
              "output_abs_max": out.abs().max().item()}
    for k, v in report.items():
        print(f"{k:16s} {v}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
