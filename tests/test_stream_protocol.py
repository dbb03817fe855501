"""The streamer's CUDA ordering protocol, checked on the CPU: the real CUDA code path (CudaBackend) runs
against a simulated CUDA (stream_check.SimCuda) that tracks happens-before with vector clocks, over
prefetch 0–3, fewer and more streamed blocks than ring slots, resident + streamed mixes, the pinned and
the mapped+staging tiers, sampling-loop sessions and back-to-back bare forwards, a re-sync after an
out-of-order block, an exception, a Cancel and a Ctrl-C mid-block, an out-of-memory ring, and a second
run after each. Every run must be free of ordering violations, give the resident model's output, and
leave no device or page-locked buffer behind.

Run alone with `pytest -m stream_protocol`; on a GPU, bench/gpu_check.py runs the same scenarios with
the real CUDA under TORCH_CUDA_SANITIZER=1."""

import gc
import os

import pytest
import torch

from hystream.errors import BudgetError
from hystream.offload.backend import CudaBackend
from stream_check import SimCuda
from test_streamer import fresh, reference, streamed

pytestmark = pytest.mark.stream_protocol
REAL_CUDA = os.environ.get("HYSTREAM_PROTOCOL_DEVICE") == "cuda"  # gpu_check.py: the same scenarios, real CUDA


def harness(n_blocks, prefetch, resident, tier, fail_alloc_after=None, refuse_pinning=False):
    """(sim, model, streamer, x, want): the model streamed through the checked CUDA path."""
    ref, x, want = reference(n=n_blocks)
    m = fresh(n=n_blocks)
    if REAL_CUDA:
        sim = None
        backend = CudaBackend("cuda")
        x, want = x.cuda(), want.cuda()
    else:
        sim = SimCuda(fail_alloc_after=fail_alloc_after, refuse_pinning=refuse_pinning)
        backend = CudaBackend("cpu", cuda=sim)
    s = streamed(m, prefetch=prefetch, resident=resident, host_tier=tier, backend=backend)
    if REAL_CUDA:
        m.to("cuda")
        for b in m.blocks:
            b.gpu_cycles = 1_000_000  # the GPU lags the host: a missing wait reads a slot mid-copy
    return sim, m, s, x, want


def checked(sim, fn):
    if sim is None:
        with torch.no_grad():
            return fn()
    with sim.compute_reads(), torch.no_grad():
        return fn()


def finish(sim, s):
    assert s._session is None
    live = s.live_buffers()
    assert len(live) == len(s.resident), [b.numel() for b in live]  # only resident blocks' buffers
    s.detach()
    gc.collect()
    if sim is not None:
        assert sim.pinned_live == 0, "page-locked memory left after detach"
        sim.check()


def bare_forwards(m, s, x, want):
    for _ in range(2):  # back to back, with compute between them
        assert torch.equal(m(x), want)
        (x * 2).sum()


def sampling_loop(m, s, x, want):
    with s.session():
        for _ in range(3):
            assert torch.equal(m(x), want)
            x = x + 0  # the sampler's update between steps


def resync(m, s, x, want):
    full = m(x)
    with s.session():
        m.stop_after = 1  # a forward that ends early: the next one starts out of the expected order
        m(x)
        m.stop_after = None
        assert torch.equal(m(x), full)
    assert torch.equal(m(x), want)


def failure(kind):
    def scenario(m, s, x, want):
        if kind == "exception":
            m.blocks[-2].fail = True
            expected = RuntimeError
        elif kind == "cancel":
            calls = []

            def cancel():
                calls.append(1)
                if len(calls) == 3:
                    raise InterruptedError("cancelled by the user")
            s.interrupt = cancel
            expected = InterruptedError
        else:  # Ctrl-C inside a block: a BaseException, which PyTorch's always_call hooks do not see
            original = m.blocks[1].forward

            def interrupted(*a):
                raise KeyboardInterrupt
            m.blocks[1].forward = interrupted
            expected = KeyboardInterrupt
        with pytest.raises(expected):
            with s.session():
                m(x)
                m(x)
        assert s._session is None
        m.blocks[-2].fail = False
        s.interrupt = None
        if kind == "ctrl_c":
            m.blocks[1].forward = original
        assert torch.equal(m(x), want)  # the second run after it
    return scenario


def decided_passes(m, s, x, want):
    """Step caching's First-Block Cache: each pass pauses after block 1 until it decides; a skipped pass
    ends there (nothing after block 1 may be copied for it) and the next pass starts at block 0."""
    full = reference(n=len(m.blocks))[0]
    full.stop_after = 1
    with torch.no_grad():
        short = full(x)
    decisions = []

    def decide(module, args, output):
        skip = len(decisions) % 2 == 1
        decisions.append(skip)
        s.end_pass() if skip else s.resume()
    handle = m.blocks[1].register_forward_hook(decide)
    s.pause_after(1)
    streamed = [i for i in range(len(m.blocks)) if i not in s.resident]
    head = [i for i in streamed if i <= 1]
    try:
        before = s.stats.copies
        with s.session():
            for step in range(4):
                m.stop_after = 1 if step % 2 == 1 else None
                assert torch.equal(m(x), short if m.stop_after else want), step
            copies = s.stats.copies - before
        # two full passes, two that stop after block 1 (nothing of their tail copied), plus at most the
        # next pass's first blocks prefetched at the end
        assert 2 * len(streamed) + 2 * len(head) <= copies <= 2 * len(streamed) + 2 * len(head) + s.prefetch, copies
    finally:
        handle.remove()
        s.pause_after(None)
        m.stop_after = None
    assert torch.equal(m(x), want)


SCENARIOS = {"bare_forwards": bare_forwards, "sampling_loop": sampling_loop, "resync": resync,
             "decided_passes": decided_passes,
             "exception": failure("exception"), "cancel": failure("cancel"), "ctrl_c": failure("ctrl_c")}


@pytest.mark.parametrize("tier", ["pinned", "mapped"])
@pytest.mark.parametrize("n_blocks, resident", [(6, ()), (6, (1, 4)), (2, ()), (3, (0,))],
                         ids=["6-streamed", "4-streamed+2-resident", "2-streamed", "2-streamed+1-resident"])
@pytest.mark.parametrize("prefetch", [0, 1, 2, 3])
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_ordering_protocol(scenario, prefetch, n_blocks, resident, tier):
    if REAL_CUDA and scenario == "ctrl_c":
        pytest.skip("Ctrl-C is simulated by the host path; nothing device-specific")
    sim, m, s, x, want = harness(n_blocks, prefetch, resident, tier)
    checked(sim, lambda: SCENARIOS[scenario](m, s, x, want))
    if sim is not None and tier == "pinned":
        held, weights = s.store.held_bytes, sum(s.block_bytes(i) for i in range(n_blocks))
        assert weights <= held <= 1.05 * weights + 4096 * n_blocks, (held, weights)  # exact size, page-aligned
        assert sim.pinned_peak <= held + 2 * (prefetch + 1) * max(map(s.block_bytes, range(n_blocks)))
    finish(sim, s)


@pytest.mark.skipif(REAL_CUDA, reason="the out-of-memory is simulated")
@pytest.mark.parametrize("tier", ["pinned", "mapped"])
def test_out_of_memory_ring_is_a_clear_error_and_leaves_nothing(tier):
    sim, m, s, x, want = harness(6, 2, (), tier, fail_alloc_after=1)  # the second ring slot fails
    with pytest.raises(BudgetError) as info:
        checked(sim, lambda: m(x))
    msg = str(info.value)
    assert "ring slot" in msg and "prefetch_blocks" in msg and "out of memory after 1" in msg, msg
    assert s._session is None and s.live_buffers() == []
    sim.fail_alloc_after = None
    checked(sim, lambda: torch.equal(m(x), want)) or pytest.fail("the run after the OOM differs")
    finish(sim, s)


@pytest.mark.skipif(REAL_CUDA, reason="the violations are simulated")
def test_the_checker_sees_a_missing_wait():
    """The checker itself: a streamer whose compute does not wait for the copy is reported."""
    sim, m, s, x, want = harness(6, 1, (), "pinned")
    stream_cls = type(sim.default)
    saved = stream_cls.wait_event
    stream_cls.wait_event = lambda self, event: None  # drop every wait_event
    try:
        checked(sim, lambda: m(x))
    finally:
        stream_cls.wait_event = saved
    s.detach()
    with pytest.raises(AssertionError, match="read before the write|write after read"):
        sim.check()


@pytest.mark.skipif(REAL_CUDA, reason="the refusal is simulated")
@pytest.mark.parametrize("tier", ["pinned", "mapped"])
@pytest.mark.parametrize("scenario", ["bare_forwards", "sampling_loop"])
def test_a_system_that_refuses_to_lock_memory_still_streams(tier, scenario, caplog):
    """No page-locked memory at all (the host took it, or RLIMIT_MEMLOCK): the pinned tier falls back to
    the file and staging to ordinary memory with synchronous copies — correct, ordered, nothing leaked."""
    sim, m, s, x, want = harness(6, 1, (), tier, refuse_pinning=True)
    checked(sim, lambda: SCENARIOS[scenario](m, s, x, want))
    assert s.store.held_bytes == 0 and "synchronous copies" in caplog.text
    finish(sim, s)
