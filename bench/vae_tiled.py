"""HyStream's tiled VAE decode vs diffusers' `enable_tiling()` decode, same weights, same tile sizes.

A random `AutoencoderKLHunyuanVideo` at full width (channels 128/256/512/512, 2 layers per block, 16
latent channels) with its residual branches scaled down (a local, well-conditioned net, like a trained
VAE, so the tiling error is about tiling) decodes a small homogeneous latent video three ways in one
process: untiled (diffusers), diffusers tiled, HyStream tiled. Reported: peak bytes of the tensors each
decode creates (the live counter of memory_probe.py; on a GPU also
max_memory_allocated), time, and each tiled result's max abs difference and PSNR against the untiled
decode. JSON line last.

    python bench/vae_tiled.py [--frames 9 --height 128 --width 192] [--tile 128 --overlap 32] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from hystream.families.hunyuan_video.vae import HunyuanVideoVAE, VAEConfig
from hystream.memory_probe import LiveBytes
from hystream.vae.tiling import TileSpec, decode_tiled
from tiny_vae import stationary_latents

GIB = 1024 ** 3


def measure(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    probe = LiveBytes()
    t0 = time.perf_counter()
    with torch.no_grad(), probe:
        out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - t0
    vram = torch.cuda.max_memory_allocated(device) - base if device.type == "cuda" else None
    return out, elapsed, probe.peak, vram


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=9)
    ap.add_argument("--height", type=int, default=128)
    ap.add_argument("--width", type=int, default=192)
    ap.add_argument("--tile", type=int, default=128)
    ap.add_argument("--overlap", type=int, default=32)
    ap.add_argument("--temporal", type=int, default=16, help="temporal tile in frames (diffusers' default)")
    ap.add_argument("--temporal-overlap", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    from diffusers import AutoencoderKLHunyuanVideo

    torch.manual_seed(0)
    ref = AutoencoderKLHunyuanVideo().eval()
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if ".conv2." in name or ".to_out." in name:
                p.mul_(0.02)
    ref.to(device)
    ours = HunyuanVideoVAE(VAEConfig()).eval().to(device)
    ours.load_state_dict(ref.state_dict())
    t = (args.frames - 1) // 4 + 1
    z = stationary_latents(t, args.height // 8, args.width // 8).to(device)

    ref.use_framewise_decoding = False
    full, t_full, _, _ = measure(lambda: ref.decode(z).sample, device)
    full = (full[0].permute(1, 2, 3, 0).float().cpu() * 0.5 + 0.5).clamp(0, 1)

    stride = args.tile - args.overlap
    ref.enable_tiling(tile_sample_min_height=args.tile, tile_sample_min_width=args.tile,
                      tile_sample_min_num_frames=args.temporal, tile_sample_stride_height=stride,
                      tile_sample_stride_width=stride, tile_sample_stride_num_frames=args.temporal - args.temporal_overlap)
    ref.use_framewise_decoding = True
    theirs, t_theirs, peak_theirs, vram_theirs = measure(lambda: ref.decode(z).sample, device)
    theirs = (theirs[0].permute(1, 2, 3, 0).float().cpu() * 0.5 + 0.5).clamp(0, 1)
    spec = TileSpec(args.tile, args.overlap, args.temporal, args.temporal_overlap)
    mine, t_mine, peak_mine, vram_mine = measure(lambda: decode_tiled(ours, z, spec), device)

    def psnr(a):
        return round(10 * math.log10(1 / max(((a - full) ** 2).mean().item(), 1e-20)), 2)

    report = {"bench": "vae_tiled", "device": str(device), "frames": args.frames, "height": args.height,
              "width": args.width, "tile": args.tile, "overlap": args.overlap, "temporal": args.temporal,
              "temporal_overlap": args.temporal_overlap, "untiled_s": round(t_full, 2),
              "diffusers_tiled_s": round(t_theirs, 2), "hystream_tiled_s": round(t_mine, 2),
              "diffusers_peak_gib": round(peak_theirs / GIB, 3), "hystream_peak_gib": round(peak_mine / GIB, 3),
              "hystream_output_buffer_gib": round(mine.numel() * 4 / GIB, 3),
              "diffusers_max_diff": round((theirs - full).abs().max().item(), 5), "diffusers_psnr_db": psnr(theirs),
              "hystream_max_diff": round((mine - full).abs().max().item(), 5), "hystream_psnr_db": psnr(mine),
              "hystream_vs_diffusers_max_diff": round((mine - theirs).abs().max().item(), 5)}
    if device.type == "cuda":
        report.update(diffusers_vram_gib=round(vram_theirs / GIB, 3), hystream_vram_gib=round(vram_mine / GIB, 3))
    for k, v in report.items():
        print(f"{k:32s} {v}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
