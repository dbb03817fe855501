"""Every check that needs a GPU, in one short run on a bare machine (only torch, numpy, safetensors, einops and
transformers installed; the pack need not be): one JSON line last on stdout, and the same JSON written to
`--out DIR/gpu_check.json` after each section, so a run cut short still leaves every figure taken so far.

Sections, in order, each with its share of `--budget-s` (it sizes its repeats to it; a section that would
start after the budget is recorded as skipped). An error is recorded in its section (`error`, `trace`)
and the run goes on:
  environment          GPU, capability, driver, torch / CUDA versions, allocator backend, CUDA context size
  pinning_refusal      a refused cudaHostRegister, then a kernel on the same thread: must not raise
  protocol             the stream-protocol scenarios (tests/stream_scenarios.py) on the real CUDA
  dit_file             writes the full-width DiT (2 double + 2 single blocks, bf16) the next sections load
  dit_streamed_vs_resident   bit-identical? time ratio, stall per block, at 16k and 720p-sized token counts
  dit_streamed_vs_resident_async_allocator   the same in a subprocess under backend:cudaMallocAsync
  peaks                peak allocated / reserved per stage (DiT, streamed LLaVA, a VAE tile) vs the estimates
  pinned               page-locked bytes held vs the weight bytes they hold
  gguf_decode          GGUF decode throughput per quant type vs copying the bf16 weight from pinned memory
  ring_merge           ring attention's partial softmaxes merged by the kernel's log-sum-exps vs one attention
  worker_thread_sanitizer   PyTorch's CUDA sanitizer extended to the streamer's worker thread (last:
                       importing the sanitizer turns on CUDA tracing for the rest of the process)

Without a GPU it prints {"gpu": false, ...} and exits 0. `--device cpu` is a dry run of every section at
tiny sizes (the simulated CUDA of tests/stream_check.py where a section needs streams), which CI runs.

    python bench/gpu_check.py [--out DIR] [--budget-s 480] [--device cpu]
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import faulthandler
import importlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)


def make_pack_importable() -> None:
    """`import hystream` from this checkout whether or not it is installed (as tests/conftest.py does), and
    the pytest-free test helpers (tests/stream_scenarios.py, tests/stream_check.py)."""
    link_dir = tempfile.mkdtemp(prefix="hystream-import-")
    atexit.register(shutil.rmtree, link_dir, True)
    os.symlink(REPO, os.path.join(link_dir, "hystream"))
    sys.path[:0] = [link_dir, BENCH, os.path.join(REPO, "tests")]


class Share:
    """A section's time: it may use `left()` seconds (its share, or less when the run is late)."""

    def __init__(self, seconds: float):
        self.deadline = time.time() + max(0.0, seconds)

    def left(self) -> float:
        return max(0.0, self.deadline - time.time())


class Context:
    """What sections share: the device, a scratch folder, and the DiT file once dit_file wrote it."""

    def __init__(self, device, folder: str, dit_path: str | None = None):
        self.device, self.folder = device, folder
        self.small = device.type != "cuda"  # dry run: tiny sizes
        self.dit_path = dit_path


class Run:
    def __init__(self, out_dir: str, budget_s: float, report: dict):
        self.out = os.path.join(out_dir, "gpu_check.json")
        self.budget_s, self.deadline = budget_s, time.time() + budget_s
        self.report = report
        self.report.setdefault("sections", {})

    def save(self) -> None:
        tmp = self.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.report, f, indent=1)
        os.replace(tmp, self.out)

    def section(self, name: str, where: str, ctx: Context, share: float) -> None:
        """Run the function `where` ("module.function", imported here: a module that fails to import is
        that section's error) with its share of the budget, and record its figures."""
        sections = self.report["sections"]
        if time.time() >= self.deadline:
            sections[name] = {"skipped": "time budget spent"}
            self.save()
            return
        t0 = time.time()
        try:
            module, function = where.split(".")
            fn = getattr(importlib.import_module(module), function)
            result = fn(ctx, Share(min(share * self.budget_s, self.deadline - t0)))
        except BaseException as e:  # one failing section must not hide the others' figures
            result = {"error": f"{type(e).__name__}: {str(e)[:400]}", "trace": traceback.format_exc()[-1500:]}
            if not isinstance(e, Exception):  # SIGTERM / Ctrl-C: record it, then stop
                sections[name] = result
                self.save()
                raise
        result["seconds"] = round(time.time() - t0, 1)
        sections[name] = result
        self.save()
        print(f"{name}: {json.dumps(result)[:300]}", file=sys.stderr, flush=True)
        with contextlib.suppress(Exception):  # the next section starts from a clean allocator either way
            release_memory()


def release_memory() -> None:
    import torch

    from measure import trim

    trim()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


SECTIONS = [  # (name, "module.function", share of the budget), in the order they run
    ("environment", "gpu_sections.environment", 0.03),
    ("pinning_refusal", "gpu_sections.pinning_refusal", 0.02),
    ("protocol", "gpu_protocol.protocol", 0.15),
    ("dit_file", "gpu_dit.dit_file", 0.08),
    ("dit_streamed_vs_resident", "gpu_dit.streamed_vs_resident", 0.20),
    ("dit_streamed_vs_resident_async_allocator", "gpu_dit.async_allocator", 0.12),
    ("peaks", "gpu_peaks.peaks", 0.15),
    ("pinned", "gpu_sections.pinned", 0.03),
    ("gguf_decode", "gpu_sections.gguf_decode", 0.05),
    ("ring_merge", "gpu_ring.ring_merge", 0.02),
    ("worker_thread_sanitizer", "gpu_protocol.worker_thread_sanitizer", 0.12),  # last: it turns CUDA tracing on
]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (default), or cpu: a dry run of every section")
    ap.add_argument("--budget-s", type=float, default=480, help="no section starts after this many seconds")
    ap.add_argument("--out", help="folder for gpu_check.json (default: a new temporary folder)")
    ap.add_argument("--only-section", help=argparse.SUPPRESS)  # the async-allocator subprocess
    ap.add_argument("--dit-file", help=argparse.SUPPRESS)  # ... reuses the parent's DiT file
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    out_dir = args.out or tempfile.mkdtemp(prefix="hystream-gpu-check-")
    os.makedirs(out_dir, exist_ok=True)
    print(f"gpu_check: writing {os.path.join(out_dir, 'gpu_check.json')}", file=sys.stderr, flush=True)
    faulthandler.enable()  # a crash in native code still says where
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a timeout's TERM still leaves the JSON
    import torch

    report = {"gpu": False, "device": args.device, "torch": torch.__version__, "cuda_build": torch.version.cuda}
    run = Run(out_dir, args.budget_s, report)
    folder = tempfile.mkdtemp(prefix="hystream-gpu-check-models-")  # the model files the sections write
    try:
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            report["reason"] = "torch.cuda.is_available() is False"
            return 0
        report["gpu"] = args.device.startswith("cuda")
        report["dry_run"] = not report["gpu"]
        try:
            make_pack_importable()
            ctx = Context(torch.device(args.device), folder, args.dit_file)
        except Exception as e:  # noqa: BLE001 - nothing can run, but the report still says why
            report["error"] = f"{type(e).__name__}: {e}"
            return 1
        for name, where, share in SECTIONS:
            if args.only_section is None:
                run.section(name, where, ctx, share)
            elif args.only_section == name:  # a subprocess for one section: all of its budget
                run.section(name, where, ctx, 0.95)
        return 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        run.save()
        print(json.dumps(report), flush=True)


if __name__ == "__main__":
    sys.exit(main())
