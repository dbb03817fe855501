"""Headless HyStream: `python -m hystream <command>`.

smoke  builds a tiny random DiT in the Comfy-Org layout, loads it through the real loader and runs it
       streamed and resident; checks they are bit-identical and prints the streaming counters.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

from .errors import HyStreamError


def cmd_smoke(args) -> dict:
    import torch

    from .demo import TINY_DIT, write_comfy_dit
    from .loaders.dit_loader import load_dit

    folder = args.out or tempfile.mkdtemp(prefix="hystream-smoke-")
    path = write_comfy_dit(folder)
    g = torch.Generator().manual_seed(args.seed)
    frames, height, width = 5, args.height // 8, args.width // 8
    inputs = dict(x=torch.randn(1, 16, (frames - 1) // 4 + 1, height, width, generator=g),
                  timestep=torch.tensor([900.0]), txt=torch.randn(1, 24, TINY_DIT.text_dim, generator=g),
                  txt_mask=(torch.arange(24) < 17).long()[None], pooled=torch.randn(1, TINY_DIT.pooled_dim, generator=g),
                  guidance=torch.tensor([6000.0]))
    results = {}
    for mode, resident in (("streamed", None), ("resident", "all")):
        dit = load_dit(path, args.device, prefetch_blocks=args.prefetch, resident_blocks=resident)
        try:
            t0 = time.perf_counter()
            with torch.no_grad():
                out = dit(**inputs)
            results[mode] = (out, time.perf_counter() - t0, dit.stats)
            print(f"{mode:9s} {dit.layout}: {results[mode][1]:.3f} s; {dit.stats.summary()}")
        finally:
            dit.close()
    same = bool(torch.equal(results["streamed"][0], results["resident"][0]))
    print(f"streamed output {'is bit-identical to' if same else 'DIFFERS from'} the resident one")
    report = dict(command="smoke", file=path, identical=same, shape=list(results["streamed"][0].shape),
                  streamed_s=round(results["streamed"][1], 4), resident_s=round(results["resident"][1], 4),
                  **{f"streamed_{k}": v for k, v in results["streamed"][2].as_dict().items()})
    if not same:
        raise SystemExit(json.dumps(report))
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hystream", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("smoke", help="tiny random DiT: streamed vs resident, through the real loader")
    s.add_argument("--out", help="folder for the random checkpoint (default: a temp folder)")
    s.add_argument("--device", default="cpu")
    s.add_argument("--prefetch", type=int, default=1)
    s.add_argument("--width", type=int, default=128)
    s.add_argument("--height", type=int, default=96)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_smoke)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = args.func(args)
    except HyStreamError as e:  # user errors: the message says what to do, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
