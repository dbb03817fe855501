"""gpu_check sections on the streamer's ordering protocol:

- protocol: every scenario of tests/stream_scenarios.py (prefetch 0–3 × block mixes × tiers) on the real
  CUDA, each streamed run compared bit for bit with an all-resident CUDA run of the same model, and the
  streamed-equals-resident check of tests/test_streamer.py; the dry run sends a handful through the
  simulated CUDA instead.
- worker_thread_sanitizer: PyTorch's CUDA sanitizer (CSAN) is a TorchDispatchMode, which is per thread: it
  never sees the copies the streamer's worker thread issues. The backend's `worker()` hook lets a face
  enter a sanitizer mode on that thread too (sanitizer_watch.py); this section checks the worker's copies
  are seen and reports CSAN's errors, with a control run whose stream waits are dropped."""

from __future__ import annotations

import contextlib
import gc
import threading

import torch

from stream_check import SimCuda
from stream_scenarios import (
    MIXES,
    PREFETCHES,
    SCENARIOS,
    TIERS,
    all_cases,
    checked,
    finish,
    harness,
    run_case,
    streamed_equals_resident,
)

SANITIZED = [(scenario, prefetch, "6-streamed", tier) for tier in TIERS for prefetch in (1, 2)
             for scenario in ("bare_forwards", "sampling_loop")]
NEEDS_GPU = "skipped: needs a GPU"


def run_all(checks, share) -> dict:
    """checks: [(label, fn)]. Counts, and the first failures' messages; stops when the share is spent."""
    passed, failures, ran = 0, [], 0
    for label, fn in checks:
        if share.left() <= 0:
            break
        ran += 1
        try:
            fn()
            passed += 1
        except Exception as e:  # noqa: BLE001 - a failed check is counted and reported; the others still run
            failures.append(f"{label}: {type(e).__name__}: {str(e)[:300]}")
        gc.collect()
    return {"passed": passed, "failed": len(failures), "not_run": len(checks) - ran, "first_failures": failures[:5]}


def dry_run_cases():
    """Each scenario once, with prefetch, block mix and tier varied across them: seconds, not minutes."""
    mixes = list(MIXES)
    return [(sc, PREFETCHES[i % 4], mixes[(i + 1) % 4], TIERS[i % 2]) for i, sc in enumerate(sorted(SCENARIOS))]


def scenario_checks(cases, device, face_for=lambda: None):
    return [(f"{sc} prefetch {p} {mix} {tier}",
             lambda sc=sc, p=p, mix=mix, tier=tier: run_case(sc, p, *MIXES[mix], tier, device, face_for()))
            for sc, p, mix, tier in cases]


def protocol(ctx, share) -> dict:
    cuda = ctx.device.type == "cuda"
    device = "cuda" if cuda else "cpu"
    cases = all_cases(device) if cuda else dry_run_cases()
    equal = [(f"streamed equals resident, {tier}, prefetch {p}",
              lambda tier=tier, p=p: streamed_equals_resident(tier, p, device))
             for tier in TIERS for p in ((0, 1, 3) if cuda else (1,))]
    equal_figures = run_all(equal, share)  # first: six checks, quick
    return {"backend": "real CUDA" if cuda else "simulated CUDA (tests/stream_check.SimCuda)", "cases": len(cases),
            **run_all(scenario_checks(cases, device), share), "streamed_equals_resident": equal_figures}


class CountingSim(SimCuda):
    """The simulated CUDA, counting where the streamer's worker() context is entered."""

    def __init__(self, entries: list):
        super().__init__()
        self.entries = entries

    def worker(self, device):
        self.entries.append(threading.get_ident())
        return super().worker(device)


def run_counting_copies(face, scenario, prefetch, mix, tier, device) -> int:
    """One scenario through `face`, checked like the protocol section's; the copies it issued."""
    n_blocks, resident = MIXES[mix]
    case = harness(n_blocks, prefetch, resident, tier, device, face)
    checked(case, lambda: SCENARIOS[scenario](case))
    copies = case.s.stats.copies
    finish(case)
    return copies


def worker_wiring(entries: list, copies: int) -> dict:
    off_main = sum(1 for t in entries if t != threading.main_thread().ident)
    return {"worker_entries": len(entries), "worker_entries_off_main_thread": off_main, "copies_issued": copies,
            "worker_wired": len(entries) == off_main == copies > 0}


def dry_run_wiring() -> dict:
    """No GPU: the sanitizer's hooks are installed and removed (so their code runs), and the worker()
    wiring is checked through the simulated CUDA."""
    from sanitizer_watch import SanitizerWatch

    SanitizerWatch().restore()
    entries, copies = [], 0
    for scenario, prefetch, mix, tier in SANITIZED[::3]:
        copies += run_counting_copies(CountingSim(entries), scenario, prefetch, mix, tier, "cpu")
    return {**worker_wiring(entries, copies), "sanitizer": NEEDS_GPU}


@contextlib.contextmanager
def waits_dropped():
    """The control: every stream wait gone (wait_stream goes through wait_event), as a broken streamer."""
    saved = torch.cuda.Stream.wait_event
    torch.cuda.Stream.wait_event = lambda self, event: None
    try:
        yield
    finally:
        torch.cuda.Stream.wait_event = saved
        torch.cuda.synchronize()


def worker_thread_sanitizer(ctx, share) -> dict:
    if ctx.device.type != "cuda":
        return dry_run_wiring()
    from sanitizer_watch import SanitizerWatch

    watch = SanitizerWatch()
    copies = {"cases": 0, "control": 0}

    def one(case, counter):
        copies[counter] += run_counting_copies(watch.face(), *case, "cuda")
    watch.enable()
    try:
        result = run_all([(" ".join(map(str, c)), lambda c=c: one(c, "cases")) for c in SANITIZED], share)
        found, entries, seen = len(watch.errors), list(watch.entries), watch.worker_copies
        with waits_dropped():
            control = run_all([("control", lambda: one(SANITIZED[0], "control"))], share)
    finally:
        watch.disable()
        watch.restore()
    return {"cases": len(SANITIZED), **result, **worker_wiring(entries, copies["cases"]),
            "copies_seen_by_sanitizer_on_worker": seen, "saw_worker_copies": seen >= copies["cases"] > 0,
            "csan_errors": found, "first_csan_errors": watch.errors[:3],
            "control_waits_dropped": {"csan_errors": len(watch.errors) - found, "detected": len(watch.errors) > found,
                                      "run": control}}
