"""shared/tools/memest's validation, run on HyStream's own lean blocks: the fake-tensor estimate against
real bf16 CPU runs of the same block, measured three ways (memest's method):
  counter  : memest's LiveBytes dispatch-mode counter on real tensors
  profiler : torch.profiler(profile_memory=True) → max "Total Allocated" (c10 allocator level)
  rss      : VmHWM − VmRSS (peak RSS reset through /proc/self/clear_refs), malloc's mmap threshold pinned
Each case runs in a fresh subprocess. The estimate is trusted at full size when these agree.
JSON line per case, a summary JSON line last.

    python bench/memory_validate.py [--cases narrow]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
MEMEST = os.environ.get("MEMEST_PATH", os.path.join(HERE, "..", "..", "shared", "tools", "memest"))
CASES = {  # name: (block, heads, image tokens)
    "narrow-double": ("double", 4, 8192),
    "narrow-single": ("single", 4, 8192),
    "full-double": ("double", 24, 1024),
    "full-single": ("single", 24, 1024),
}
TEXT = 256


def worker(name: str) -> None:
    import dataclasses
    import json as _json

    import torch
    from torch.profiler import ProfilerActivity, profile

    sys.path.insert(0, MEMEST)
    from estimate import LiveBytes  # memest's counter

    from hystream.families.hunyuan_video.config import DiTConfig
    from hystream.families.hunyuan_video.dit import HunyuanVideoDiT
    from hystream.models.lean import auto_chunk
    from hystream.offload.binding import bind

    kind, heads, n_img = CASES[name]
    hidden = heads * 128
    cfg = dataclasses.replace(DiTConfig(), hidden=hidden, heads=heads, mlp_hidden=4 * hidden, single_mlp_hidden=4 * hidden,
                              refiner_mlp_hidden=4 * hidden, depth_refiner=0, depth_double=1, depth_single=1)
    chunk = auto_chunk(n_img + TEXT)

    def build(device, fake):
        with torch.device("meta"):
            model = HunyuanVideoDiT(cfg)
        block = model.double_blocks[0] if kind == "double" else model.single_blocks[0]
        bind(block, {n: torch.randn(p.shape, dtype=torch.bfloat16, device=device) * 0.02 if not fake
                     else torch.empty(p.shape, dtype=torch.bfloat16, device=device) for n, p in block.named_parameters()})
        return block

    def inputs(device, real):
        make = (lambda *s, **k: torch.randn(*s, **k)) if real else (lambda *s, **k: torch.empty(*s, **k))
        img = make(1, n_img, hidden, dtype=torch.bfloat16, device=device)
        txt = make(1, TEXT, hidden, dtype=torch.bfloat16, device=device)
        vec = make(1, hidden, dtype=torch.bfloat16, device=device)
        cos = make(n_img, 128, dtype=torch.float32, device=device)
        sin = make(n_img, 128, dtype=torch.float32, device=device)
        if kind == "double":
            return (img, txt, vec, cos, sin), {"attend": None, "chunk": chunk}
        return (torch.cat((img, txt), 1), vec, cos, sin, n_img), {"attend": None, "chunk": chunk}

    def measured(block, args, kwargs):
        lb = LiveBytes(round_to=1)
        lb.track(block)
        lb.track(args, kwargs)
        base = lb.cur
        with torch.no_grad(), lb:
            out = block(*args, **kwargs)
        del out
        return lb.peak - base

    from torch._subclasses.fake_tensor import FakeTensorMode

    res = {"case": name, "block": kind, "heads": heads, "n_img": n_img, "text": TEXT, "chunk": chunk,
           "threads": torch.get_num_threads()}
    with FakeTensorMode():
        fb = build("cpu", fake=True)
        fa, fk = inputs("cpu", real=False)
        res["fake_peak_above_base"] = measured(fb, fa, fk)
    torch.manual_seed(0)
    block = build("cpu", fake=False)
    with torch.no_grad():
        wa, wk = inputs("cpu", real=True)
        block(*wa, **wk)  # warm-up: one-off kernel / thread-pool allocations are not the block's
        args, kwargs = inputs("cpu", real=True)
        res["counter_peak_above_base"] = measured(block, [a.clone() if torch.is_tensor(a) else a for a in args], kwargs)
        trace = os.path.join(HERE, f"trace_{name}.json")
        run_args = [a.clone() if torch.is_tensor(a) else a for a in args]
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            out = block(*run_args, **kwargs)
            del out
        prof.export_chrome_trace(trace)
        with open(trace) as f:
            events = [e for e in _json.load(f)["traceEvents"] if e.get("name") == "[memory]"]
        os.remove(trace)
        events.sort(key=lambda e: e["args"].get("Ev Idx", 0))
        base_alloc = events[0]["args"]["Total Allocated"] - events[0]["args"]["Bytes"]
        res["profiler_peak_above_base"] = max(e["args"]["Total Allocated"] for e in events) - base_alloc
        run_args = [a.clone() if torch.is_tensor(a) else a for a in args]
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        with open("/proc/self/status") as f:
            status = dict(line.split(":", 1) for line in f)
        rss0 = int(status["VmRSS"].split()[0]) * 1024
        out = block(*run_args, **kwargs)
        del out
        with open("/proc/self/status") as f:
            status = dict(line.split(":", 1) for line in f)
        res["rss_peak_above_base"] = int(status["VmHWM"].split()[0]) * 1024 - rss0
    fake = res["fake_peak_above_base"]
    for k in ("counter", "profiler", "rss"):
        res[f"{k}_vs_fake"] = round(res[f"{k}_peak_above_base"] / fake - 1, 5)
    print("RESULT " + _json.dumps(res))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="all", help="all, narrow, full, or a case name")
    ap.add_argument("--worker")
    args = ap.parse_args()
    if args.worker:
        worker(args.worker)
        return
    names = [n for n in CASES if args.cases == "all" or n.startswith(args.cases) or n == args.cases]
    results = []
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    for name in names:
        r = subprocess.run([sys.executable, __file__, "--worker", name], capture_output=True, text=True, env=env,
                           check=False)
        line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            raise SystemExit(f"{name} failed:\n{r.stderr[-3000:]}")
        res = json.loads(line[len("RESULT "):])
        results.append(res)
        print(json.dumps(res))
    worst = max(abs(r[f"{k}_vs_fake"]) for r in results for k in ("counter", "profiler"))
    worst_rss = max(abs(r["rss_vs_fake"]) for r in results)
    print(json.dumps({"bench": "memory_validate", "cases": len(results), "worst_counter_or_profiler_rel": worst,
                      "worst_rss_rel": worst_rss, "within_1_percent": worst <= 0.01}))


if __name__ == "__main__":
    main()
