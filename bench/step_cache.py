"""Step caching on the streamed DiT at full width: for each method at two thresholds, the steps skipped,
GiB streamed against no cache, time against no cache and the largest difference of the final latent.

A random DiT with the real width (hidden 3072, 24 heads; 1 refiner + 2 double + 4 single blocks by
default) is written as bf16 safetensors and sampled from the file with the real sampler and its
streaming session, from random text states (no text encoder needed). Random weights do not have a real
model's step-to-step smoothness: which steps get skipped at a threshold says nothing about quality on real
weights; what this measures is that skipped steps skip their compute and their transfers. The JSON line is
printed last: {"identity_max_abs", "methods": {method: [{threshold, steps, skipped, gib_streamed,
gib_streamed_uncached, time_ratio, max_abs_vs_uncached}, ...]}}.

    python bench/step_cache.py [--steps 10] [--double 2 --single 4] [--width 256 --height 192 --frames 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hystream import pipeline
from hystream.families.hunyuan_video.config import DiTConfig
from hystream.families.hunyuan_video.demo import random_dit_state_dict
from hystream.loading import load_dit
from hystream.sampling.step_cache import StepCacheSettings
from hystream.sampling.step_caches import METHODS, defaults
from measure import GIB, trim

# random weights skip less than a real model at the same threshold: higher ones than the defaults
THRESHOLDS = {"teacache": (0.3, 0.5), "first_block": (0.5, 0.8), "mag_cache": (0.06, 0.24)}
assert set(THRESHOLDS) == set(METHODS), "a threshold pair for every method"


def write(folder: str, cfg: DiTConfig) -> str:
    from safetensors.torch import save_file

    path = os.path.join(folder, "dit_fullwidth_bf16.safetensors")
    sd = random_dit_state_dict(cfg, dtype=torch.bfloat16)
    save_file({"model.diffusion_model." + k: v for k, v in sd.items()}, path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--double", type=int, default=2)
    ap.add_argument("--single", type=int, default=4)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--height", type=int, default=192)
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--text", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    cfg = dataclasses.replace(DiTConfig(), depth_double=args.double, depth_single=args.single, depth_refiner=1)
    path = write(tempfile.mkdtemp(prefix="hystream-cache-bench-"), cfg)
    g = torch.Generator().manual_seed(0)
    cond = [[torch.randn(1, args.text, cfg.text_dim, generator=g), {"pooled_output": torch.randn(1, cfg.pooled_dim, generator=g)}]]
    latent = pipeline.empty_latent(args.width, args.height, args.frames)
    settings = pipeline.SampleSettings(seed=1, steps=args.steps)

    def run(cache: StepCacheSettings | None):
        dit = load_dit(path, args.device, prefetch_blocks=1)
        try:
            t0 = time.perf_counter()
            out = pipeline.sample(dit, cond, latent, settings, step_cache=cache)
            return out, time.perf_counter() - t0, dit.step_cache_report
        finally:
            dit.close()
            trim()

    base, base_time, base_report = run(None)
    zero, _, _ = run(StepCacheSettings("teacache", 0.0))
    report = {"bench": "step_cache", "device": args.device, "hidden": cfg.hidden, "blocks": cfg.streamed_blocks,
              "steps": args.steps, "size": [args.frames, args.height, args.width],
              "identity_max_abs": float((zero - base).abs().max()), "methods": {}}
    uncached = sum(base_report["bytes_per_step"])
    for method, thresholds in THRESHOLDS.items():
        rows = []
        for threshold in thresholds:
            # MagCache: the family's published ratios for the height (the sampler picks them)
            out, seconds, rep = run(StepCacheSettings(method, threshold, start=defaults.START, max_skips=defaults.MAX_SKIPS))
            rows.append({"threshold": threshold, "steps": args.steps, "skipped": rep["skipped"],
                         "decisions": "".join("C" if d else "s" for d in rep["decisions"]["positive"]),
                         "gib_streamed": round(sum(rep["bytes_per_step"]) / GIB, 3),
                         "gib_streamed_uncached": round(uncached / GIB, 3),
                         "time_ratio": round(seconds / base_time, 3),
                         "max_abs_vs_uncached": float((out - base).abs().max())})
            print(f"{method:12s} {threshold:<5g} skipped {rows[-1]['skipped']}/{args.steps} {rows[-1]['decisions']} "
                  f"streamed {rows[-1]['gib_streamed']} / {rows[-1]['gib_streamed_uncached']} GiB, time x{rows[-1]['time_ratio']}, "
                  f"max |diff| {rows[-1]['max_abs_vs_uncached']:.4f}", flush=True)
        report["methods"][method] = rows
    os.remove(path)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
