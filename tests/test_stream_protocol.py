"""The streamer's CUDA ordering protocol, checked on the CPU: the real CUDA code path (CudaBackend) runs
against a simulated CUDA (stream_check.SimCuda) that tracks happens-before with vector clocks, over
prefetch 0–3, fewer and more streamed blocks than ring slots, resident + streamed mixes, the pinned and
the mapped+staging tiers, sampling-loop sessions and back-to-back bare forwards, a re-sync after an
out-of-order block, an exception, a Cancel and a Ctrl-C mid-block, an out-of-memory ring, and a second
run after each. Every run must be free of ordering violations, give the resident model's output, and
leave no device or page-locked buffer behind.

The scenarios and their harness live in stream_scenarios.py (no pytest there): bench/gpu_check.py runs the
same scenarios on a real GPU. Run alone with `pytest -m stream_protocol`; HYSTREAM_PROTOCOL_DEVICE=cuda
runs them here on the real CUDA."""

import os

import pytest
import torch

from hystream.errors import BudgetError
from stream_scenarios import MIXES, SCENARIOS, checked, finish, harness, run_case

pytestmark = pytest.mark.stream_protocol
REAL_CUDA = os.environ.get("HYSTREAM_PROTOCOL_DEVICE") == "cuda"  # the same scenarios on the real CUDA


@pytest.mark.parametrize("tier", ["pinned", "mapped"])
@pytest.mark.parametrize("n_blocks, resident", list(MIXES.values()), ids=list(MIXES))
@pytest.mark.parametrize("prefetch", [0, 1, 2, 3])
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_ordering_protocol(scenario, prefetch, n_blocks, resident, tier):
    if REAL_CUDA and scenario == "ctrl_c":
        pytest.skip("Ctrl-C is simulated by the host path; nothing device-specific")
    run_case(scenario, prefetch, n_blocks, resident, tier, device="cuda" if REAL_CUDA else "cpu")


@pytest.mark.skipif(REAL_CUDA, reason="the out-of-memory is simulated")
@pytest.mark.parametrize("tier", ["pinned", "mapped"])
def test_out_of_memory_ring_is_a_clear_error_and_leaves_nothing(tier):
    case = harness(6, 2, (), tier, fail_alloc_after=1)  # the second ring slot fails
    with pytest.raises(BudgetError) as info:
        checked(case, lambda: case.m(case.x))
    msg = str(info.value)
    assert "ring slot" in msg and "prefetch_blocks" in msg and "out of memory after 1" in msg, msg
    assert not case.s.in_session() and case.s.live_buffers() == []
    case.sim.fail_alloc_after = None
    checked(case, lambda: torch.equal(case.m(case.x), case.want)) or pytest.fail("the run after the OOM differs")
    finish(case)


@pytest.mark.skipif(REAL_CUDA, reason="the violations are simulated")
def test_the_checker_sees_a_missing_wait():
    """The checker itself: a streamer whose compute does not wait for the copy is reported."""
    case = harness(6, 1, (), "pinned")
    stream_cls = type(case.sim.default)
    saved = stream_cls.wait_event
    stream_cls.wait_event = lambda self, event: None  # drop every wait_event
    try:
        checked(case, lambda: case.m(case.x))
    finally:
        stream_cls.wait_event = saved
    case.s.detach()
    with pytest.raises(AssertionError, match="read before the write|write after read"):
        case.sim.check()


@pytest.mark.skipif(REAL_CUDA, reason="the refusal is simulated")
@pytest.mark.parametrize("tier", ["pinned", "mapped"])
@pytest.mark.parametrize("scenario", ["bare_forwards", "sampling_loop"])
def test_a_system_that_refuses_to_lock_memory_still_streams(tier, scenario, caplog):
    """No page-locked memory at all (the host took it, or RLIMIT_MEMLOCK): the pinned tier falls back to
    the file and staging to ordinary memory with synchronous copies — correct, ordered, nothing leaked."""
    case = harness(6, 1, (), tier, refuse_pinning=True)
    checked(case, lambda: SCENARIOS[scenario](case))
    assert case.s.store.held_bytes == 0 and "synchronous copies" in caplog.text
    finish(case)
