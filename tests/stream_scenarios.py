"""The streamer's ordering-protocol scenarios and their harness, without pytest: tests/test_stream_protocol.py
runs them against the simulated CUDA (stream_check.SimCuda), bench/gpu_check.py on a real GPU.

On the real CUDA the model is built the way the loaders build it: the blocks stay meta skeletons whose
weights live only in the streamer (nothing is moved with `.to("cuda")`), and the reference is an
all-resident run of the same model through `CudaBackend` (the same kernels, never a CPU reference),
compared bit for bit. Every block then spins the compute stream, so the GPU lags the host and a missing
wait would read a slot mid-copy."""

from __future__ import annotations

import contextlib
import dataclasses
import gc

import torch

from chain_model import chain_input, fresh, reference, streamed
from hystream.offload.backend import CudaBackend
from hystream.offload.settings import RunHooks
from stream_check import SimCuda

LAG_CYCLES = 1_000_000  # on a GPU every block spins this long first: the device lags the host
PREFETCHES = (0, 1, 2, 3)
TIERS = ("pinned", "mapped")
MIXES = {"6-streamed": (6, ()), "4-streamed+2-resident": (6, (1, 4)), "2-streamed": (2, ()),
         "2-streamed+1-resident": (3, (0,))}  # name: (blocks, resident ones)


@dataclasses.dataclass
class Case:
    sim: SimCuda | None  # None on the real CUDA
    m: torch.nn.Module
    s: object  # the BlockStreamer
    x: torch.Tensor
    want: torch.Tensor  # the full forward's output
    short: torch.Tensor  # the output of a forward that stops after block 1


@contextlib.contextmanager
def raises(expected):
    """pytest.raises without pytest (BaseExceptions such as KeyboardInterrupt included)."""
    try:
        yield
    except expected:
        return
    raise AssertionError(f"{expected.__name__} was not raised")


def cpu_reference(n_blocks):
    ref, x, want = reference(n=n_blocks)
    ref.stop_after = 1
    with torch.no_grad():
        return x, want, ref(x)


def cuda_reference(n_blocks, device="cuda"):
    """The same model all-resident on the GPU: the output the streamed runs must equal bit for bit."""
    m = fresh(n=n_blocks)
    s = streamed(m, resident=range(n_blocks), backend=CudaBackend(device))
    x = chain_input().to(device)
    with torch.no_grad():
        want = m(x)
        m.stop_after = 1
        short = m(x)
    s.detach()
    return x, want, short


def harness(n_blocks, prefetch, resident, tier, device="cpu", face=None, **sim_options) -> Case:
    """The model streamed through the checked CUDA path: on "cpu" the simulated CUDA (`face`, or a SimCuda
    made with `sim_options`), on "cuda" the real one (`face`: a TorchCuda, default torch.cuda itself)."""
    if device == "cuda":
        sim, backend = None, CudaBackend("cuda", cuda=face)
        x, want, short = cuda_reference(n_blocks)
    else:
        sim = face or SimCuda(**sim_options)
        backend = CudaBackend("cpu", cuda=sim)
        x, want, short = cpu_reference(n_blocks)
    m = fresh(n=n_blocks)
    s = streamed(m, prefetch=prefetch, resident=resident, host_tier=tier, backend=backend)
    if device == "cuda":
        for b in m.blocks:
            b.gpu_cycles = LAG_CYCLES
    return Case(sim, m, s, x, want, short)


def checked(case: Case, fn):
    reads = case.sim.compute_reads() if case.sim is not None else contextlib.nullcontext()
    with reads, torch.no_grad():
        return fn()


def finish(case: Case):
    s = case.s
    assert not s.in_session()
    live = s.live_buffers()
    assert len(live) == len(s.resident_blocks()), [b.numel() for b in live]  # only resident blocks' buffers
    s.detach()
    gc.collect()
    if case.sim is not None:
        assert case.sim.pinned_live == 0, "page-locked memory left after detach"
        case.sim.check()


def check_pinned_bytes(case: Case, n_blocks, prefetch):
    s, sim = case.s, case.sim
    held, weights = s.store.held_bytes, sum(s.block_bytes(i) for i in range(n_blocks))
    assert weights <= held <= 1.05 * weights + 4096 * n_blocks, (held, weights)  # exact size, page-aligned
    assert sim.pinned_peak <= held + 2 * (prefetch + 1) * max(map(s.block_bytes, range(n_blocks)))


def bare_forwards(c: Case):
    for _ in range(2):  # back to back, with compute between them
        assert torch.equal(c.m(c.x), c.want)
        (c.x * 2).sum()


def sampling_loop(c: Case):
    x = c.x
    with c.s.session():
        for _ in range(3):
            assert torch.equal(c.m(x), c.want)
            x = x + 0  # the sampler's update between steps


def resync(c: Case):
    m, s, x = c.m, c.s, c.x
    full = m(x)
    with s.session():
        m.stop_after = 1  # a forward that ends early: the next one starts out of the expected order
        m(x)
        m.stop_after = None
        assert torch.equal(m(x), full)
    assert torch.equal(m(x), c.want)


def failure(kind):
    def scenario(c: Case):
        m, s = c.m, c.s
        hooks = None
        if kind == "exception":
            m.blocks[-2].fail = True
            expected = RuntimeError
        elif kind == "cancel":
            calls = []

            def cancel():
                calls.append(1)
                if len(calls) == 3:
                    raise InterruptedError("cancelled by the user")
            hooks = RunHooks(interrupt=cancel)
            expected = InterruptedError
        else:  # Ctrl-C inside a block: a BaseException, which PyTorch's always_call hooks do not see
            original = m.blocks[1].forward

            def interrupted(*a):
                raise KeyboardInterrupt
            m.blocks[1].forward = interrupted
            expected = KeyboardInterrupt
        with raises(expected), s.session(hooks=hooks):
            m(c.x)
            m(c.x)
        assert not s.in_session()
        m.blocks[-2].fail = False
        if kind == "ctrl_c":
            m.blocks[1].forward = original
        assert torch.equal(m(c.x), c.want)  # the second run after it
    return scenario


def decided_passes(c: Case):
    """Step caching's First-Block Cache: each pass pauses after block 1 until it decides; a skipped pass
    ends there (nothing after block 1 may be copied for it) and the next pass starts at block 0."""
    m, s = c.m, c.s
    decisions = []

    def decide(module, args, output):
        skip = len(decisions) % 2 == 1
        decisions.append(skip)
        s.end_pass() if skip else s.resume()
    handle = m.blocks[1].register_forward_hook(decide)
    s.pause_after(1)
    streamed_blocks = [i for i in range(len(m.blocks)) if i not in s.resident_blocks()]
    head = [i for i in streamed_blocks if i <= 1]
    try:
        before = s.stats.copies
        with s.session():
            for step in range(4):
                m.stop_after = 1 if step % 2 == 1 else None
                assert torch.equal(m(c.x), c.short if m.stop_after else c.want), step
            copies = s.stats.copies - before
        # two full passes, two that stop after block 1 (nothing of their tail copied), plus at most the
        # next pass's first blocks prefetched at the end
        least = 2 * len(streamed_blocks) + 2 * len(head)
        assert least <= copies <= least + s.prefetch_depth(), copies
    finally:
        handle.remove()
        s.pause_after(None)
        m.stop_after = None
    assert torch.equal(m(c.x), c.want)


SCENARIOS = {"bare_forwards": bare_forwards, "sampling_loop": sampling_loop, "resync": resync,
             "decided_passes": decided_passes,
             "exception": failure("exception"), "cancel": failure("cancel"), "ctrl_c": failure("ctrl_c")}


def run_case(scenario, prefetch, n_blocks, resident, tier, device="cpu", face=None):
    """One scenario, checked: outputs, ordering (simulated CUDA), page-locked bytes, nothing left behind."""
    case = harness(n_blocks, prefetch, resident, tier, device, face)
    checked(case, lambda: SCENARIOS[scenario](case))
    if case.sim is not None and tier == "pinned":
        check_pinned_bytes(case, n_blocks, prefetch)
    finish(case)


def all_cases(device="cpu"):
    """(scenario, prefetch, mix name, tier) for every case; Ctrl-C is the host path's alone, not the GPU's."""
    return [(sc, p, mix, tier) for sc in sorted(SCENARIOS) for p in PREFETCHES for mix in MIXES for tier in TIERS
            if not (device == "cuda" and sc == "ctrl_c")]


def streamed_equals_resident(tier, prefetch, device="cuda", face=None):
    """Streamed vs resident, both through the CUDA path (on the GPU: never a CPU reference, kernels
    differ), three forwards in a session, every block lagging the GPU behind the host."""
    outs = []
    for resident in ((), tuple(range(8))):
        m = fresh(n=8)
        for b in m.blocks:
            b.gpu_cycles = 2 * LAG_CYCLES
        backend = CudaBackend(device, cuda=face if device == "cuda" else (face or SimCuda()))
        s = streamed(m, prefetch=prefetch, resident=resident, host_tier=tier, backend=backend)
        x = chain_input().to(device)
        with torch.no_grad(), s.session():
            outs.append([m(x) for _ in range(3)])
        if device == "cuda":
            torch.cuda.synchronize()
        assert s.live_buffers() == [] or resident
        s.detach()
    assert all(torch.equal(a, b) for a, b in zip(*outs))
