"""Speed-up of sequence parallelism over ranks: the same `generate` run with torchrun on 1, 2, … ranks, the
sample and decode stages' seconds from rank 0's report, each as a ratio to one rank (one run, one machine).
On a machine with GPUs (one rank per GPU, NCCL) this is the figure that matters; `--demo` runs the demo's
tiny random models on CPU ranks (gloo), which only shows the bench works: tiny CPU runs are dominated by
process start and exchange, not compute.

    python bench/ranks_speed.py --dit D --llm L --clip C --vae V [--ranks 1 2 4 8] [--width 1280 --height 720 --frames 129]
    python bench/ranks_speed.py --demo [--ranks 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(ranks: int, model_args: list[str], size: list[str], out: str, device: list[str]) -> dict:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(ranks),
                "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "-m", "hystream"]
    cmd = [*launcher, "generate", *model_args, "--prompt", "A red fox trots through fresh snow at sunrise.", *size,
           *device, "--out", out]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{ranks} ranks failed:\n{done.stderr[-3000:]}")
    with open(os.path.splitext(out)[0] + ".report.json") as f:
        return {s["stage"]: s for s in json.load(f)["stages"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in ("dit", "llm", "clip", "vae"):
        p.add_argument(f"--{name}")
    p.add_argument("--demo", action="store_true", help="the demo's tiny random models on CPU ranks")
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--width", default="848")
    p.add_argument("--height", default="480")
    p.add_argument("--frames", default="61")
    p.add_argument("--steps", default="30")
    args = p.parse_args()
    folder = tempfile.mkdtemp(prefix="hystream-ranks-speed-")
    if args.demo:
        from hystream.families.hunyuan_video.demo import build_models

        models = build_models(os.path.join(folder, "models"))
        args.dit, args.llm, args.clip, args.vae = models["dit"], models["llm"], models["clip"], models["vae"]
        args.width, args.height, args.frames, args.steps = "64", "48", "9", "4"
    if not all((args.dit, args.llm, args.clip, args.vae)):
        p.error("give --dit --llm --clip --vae (or --demo)")
    model_args = ["--dit", args.dit, "--llm", args.llm, "--clip", args.clip, "--vae", args.vae]
    size = ["--width", args.width, "--height", args.height, "--frames", args.frames, "--steps", args.steps]
    device = ["--device", "cpu"] if args.demo else []
    rows, base = [], None
    for n in args.ranks:
        stages = run(n, model_args, size, os.path.join(folder, f"ranks{n}.mp4"), device)
        sample, decode = stages["sample"]["seconds"], stages["decode"]["seconds"]
        base = base or (sample, decode)
        rows.append({"ranks": n, "sample_s": sample, "decode_s": decode, "sample_speedup": round(base[0] / sample, 2),
                     "decode_speedup": round(base[1] / decode, 2), "peak_vram_gib": stages["sample"].get("peak_vram_gib")})
        print(f"{n} ranks: sample {sample:.1f} s ({rows[-1]['sample_speedup']}x), decode {decode:.1f} s "
              f"({rows[-1]['decode_speedup']}x)", file=sys.stderr)
    print(json.dumps({"bench": "ranks_speed", "device": "cpu (demo)" if args.demo else "cuda", "rows": rows}))


if __name__ == "__main__":
    main()
