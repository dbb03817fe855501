"""FramePack's peak device memory per stage at real sizes, for 5, 30 and 60 seconds, without a GPU: every
section's DiT run and VAE decode, as the engine plans them (the DiT's activation estimator on fake tensors at
the section's packed token count; the VAE's automatic tiles under the DiT stage). A section's shapes do not
depend on the video's length (the history is packed to 19 latent frames, a section decodes itself and its
neighbour), so each stage's peak is the same at any length: the table shows it.

    python bench/memory_framepack.py [--weights bf16|fp8_e4m3fn|Q8_0]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math

import torch

GIB = 1024 ** 3
SIZES = {"480p": (480, 832), "720p": (720, 1280)}
SIGLIP_TOKENS, SIGLIP_WIDTH, TEXT_TOKENS = 729, 1152, 256
STORED = {"bf16": None, "fp8_e4m3fn": torch.float8_e4m3fn, "Q8_0": "Q8_0"}  # how the blocks' Linears are kept


def stage_peaks(seconds: float, height: int, width: int, weights: str, window: int = 9) -> dict:
    from hystream import planner
    from hystream.families import registry
    from hystream.families.hunyuan_video.config import DiTConfig
    from hystream.families.hunyuan_video.framepack import HISTORY, SectionHistory, section_count
    from hystream.families.hunyuan_video.memory import forward_peak_bytes
    from hystream.sampling.long_video import LongVideoSettings, frames_for_seconds

    cfg = DiTConfig(image_proj_dim=SIGLIP_WIDTH)
    settings = LongVideoSettings(frames_for_seconds(seconds, 30), window=window)
    units, fixed = planner.dit_weights(registry.default(), weights, cfg)
    ring = 2 * max(units)
    h, w = height // 8, width // 8
    history = SectionHistory(settings, torch.zeros(1, 16, 1, h, w))
    dit_peak, vae_peak, spans = 0, 0, set()
    for k in range(section_count(settings)):
        packed = history.packed(k)
        tokens = sum(math.prod(-(-n // s) for n, s in zip((p.shape[2], h, w), kernel)) for p, kernel in (
            (packed.clean, (1, 2, 2)), (packed.history_2x, (2, 4, 4)), (packed.history_4x, (4, 8, 8))))
        frames = window + -(-tokens // ((h // 2) * (w // 2)))  # as many latent frames as the packed tokens fill
        act = forward_peak_bytes(dataclasses.replace(cfg, image_proj_dim=0), (1, 16, frames, h, w),
                                 TEXT_TOKENS + SIGLIP_TOKENS, torch.bfloat16, True, None, "cuda",
                                 stored=STORED[weights])
        dit_peak = max(dit_peak, fixed + ring + act)
        span = history.add(k, torch.zeros(1, 16, window, h, w)).shape[2]
        spans.add(span)
    for span in spans:
        plan = planner.plan_vae(width, height, (span - 1) * 4 + 1, None, cap=dit_peak)
        vae_peak = max(vae_peak, plan.total)
    return {"seconds": seconds, "sections": section_count(settings), "history_frames": sum(HISTORY[settings.order]),
            "decoded_latent_frames": sorted(spans), "dit_gib": round(dit_peak / GIB, 3), "vae_gib": round(vae_peak / GIB, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", default="bf16", choices=["bf16", "fp8_e4m3fn", "Q8_0"])
    args = parser.parse_args()
    rows = []
    for label, (height, width) in SIZES.items():
        for seconds in (5, 30, 60):
            row = {"size": label, **stage_peaks(seconds, height, width, args.weights)}
            rows.append(row)
            print(f"{label} {seconds:>3} s: {row['sections']:>3} sections, DiT {row['dit_gib']:.2f} GiB, "
                  f"VAE {row['vae_gib']:.2f} GiB (decodes {row['decoded_latent_frames']} latent frames)")
    flat = all(len({(r["dit_gib"], r["vae_gib"]) for r in rows if r["size"] == s}) == 1 for s in SIZES)
    print(json.dumps({"bench": "memory_framepack", "weights": args.weights, "flat_in_length": flat, "rows": rows}))


if __name__ == "__main__":
    main()
