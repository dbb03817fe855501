"""One rank's DiT stage memory when N ranks share each forward (sequence parallelism), without GPUs: the
activation estimator runs the real forward on fake tensors as rank 0 of N sees it (parallel/group.py
EstimateGroup: collectives make tensors of the shapes and temporaries they would), plus the streamed weights
(each rank holds the same ring and small parts as one GPU does).

    python bench/memory_ranks.py [--ranks 1 2 4 5 8]

Rank counts the heads do not divide (5 for 24 or 16 heads) go through ring attention (parallel/ring.py).
"""

from __future__ import annotations

import argparse
import json

import torch

GIB = 1024 ** 3
DT = torch.bfloat16
TEXT_TOKENS = 256


def rows(ranks: list[int]) -> list[dict]:
    from hystream import planner
    from hystream.families import registry
    from hystream.families.hunyuan_video.config import DiTConfig
    from hystream.families.hunyuan_video.memory import forward_peak_bytes
    from hystream.families.hunyuan_video_15.memory import forward_peak_bytes as forward_peak_bytes_15
    from hystream.families.hunyuan_video_15.planning import MEMORY
    from hystream.families.hunyuan_video_15.prompt import TEXT_TOKENS as TEXT_15
    from hystream.parallel.group import EstimateGroup

    cases = [("HunyuanVideo 1.0", registry.default(), DiTConfig(), (1, 16, 33, 90, 160), TEXT_TOKENS, forward_peak_bytes),
             ("HunyuanVideo 1.5", registry.lookup("hunyuanvideo15"), MEMORY.dit_config(), (1, 65, 31, 45, 80), TEXT_15,
              forward_peak_bytes_15)]
    out = []
    for name, family, cfg, shape, text, estimate in cases:
        units, fixed = planner.dit_weights(family, "bf16", cfg)
        weights = fixed + 2 * max(units)  # the small parts and a ring of two slots (prefetch 1)
        one = None
        for n in ranks:
            way = EstimateGroup(n).token_split(2 * n, cfg.heads).report()["attention"] if n > 1 else "-"
            act = estimate(cfg, shape, text, DT, True, None, "cuda", "flash", None, 0, n)
            one = one or act
            out.append({"model": name, "size": "720p", "frames": (shape[2] - 1) * 4 + 1, "ranks": n,
                        "attention": way, "activations_gib": round(act / GIB, 3), "vs_one_rank": round(act / one, 3),
                        "stage_gib": round((weights + act) / GIB, 3)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4, 5, 8])
    args = parser.parse_args()
    table = rows(args.ranks)
    print(f"{'model':18} {'ranks':>5} {'attention':>18} {'activations GiB':>16} {'vs 1 rank':>10} {'stage GiB':>10}")
    for r in table:
        print(f"{r['model']:18} {r['ranks']:>5} {r['attention']:>18} {r['activations_gib']:>16.3f} {r['vs_one_rank']:>10.3f} {r['stage_gib']:>10.3f}")
    print(json.dumps({"bench": "memory_ranks", "dtype": "bf16", "rows": table}))


if __name__ == "__main__":
    main()
