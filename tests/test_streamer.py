"""The streaming engine on generic modules: overlap, ring size, safety, budgets, re-sync, and
transformers' Llama layers streamed through it."""

import time

import pytest
import torch

from chain_model import Block, Chain, fresh, reference, streamed  # noqa: F401 (re-exported for other tests)
from hystream.errors import BudgetError
from hystream.offload.budget import plan_residency
from hystream.offload.settings import RunHooks, StreamSettings
from hystream.offload.source import StateDictSource
from hystream.offload.streamer import BlockStreamer


class SlowSource(StateDictSource):
    """Reading a block takes `delay` seconds (a slow disk)."""

    def __init__(self, blocks, delay):
        super().__init__(blocks)
        self.delay = delay

    def fill(self, index, out):
        time.sleep(self.delay)
        super().fill(index, out)


@pytest.mark.parametrize("prefetch", [0, 1, 2])
@pytest.mark.parametrize("resident", [(), (1, 4), tuple(range(6))])
def test_bit_identical(prefetch, resident):
    _, x, want = reference()
    m = fresh()
    s = streamed(m, prefetch=prefetch, resident=resident)
    with torch.no_grad():
        assert torch.equal(m(x), want)
        assert torch.equal(m(x), want)  # and again: nothing left bound or stale
    assert s.stats.copies == 2 * (6 - len(resident))


def test_prefetch_overlaps_copy_with_compute():
    """Each block's read takes as long as its compute. Without prefetch the run costs compute + all reads;
    with prefetch 1 it costs compute + the first read only: max(copy, compute) per block, not the sum.
    Compared with the unstreamed model's time in the same run, so a busy machine does not skew it."""
    n, delay = 6, 0.08
    x = torch.randn(4, 32)
    plain = fresh(n=n, sleep=delay)
    t0 = time.perf_counter()
    with torch.no_grad():
        plain(x)
    compute = time.perf_counter() - t0
    timings = {}
    for prefetch in (0, 1):
        m = fresh(n=n, sleep=delay)
        s = streamed(m, SlowSource, delay=delay, prefetch=prefetch)
        t0 = time.perf_counter()
        with torch.no_grad():
            m(x)
        timings[prefetch] = (time.perf_counter() - t0, s.stats.wait_seconds)
    (serial, serial_wait), (overlapped, overlapped_wait) = timings[0], timings[1]
    assert serial > compute + 0.9 * n * delay, (compute, timings)
    assert serial_wait > 0.9 * n * delay, (compute, timings)
    assert overlapped < compute + 2.5 * delay, (compute, timings)
    assert overlapped_wait < 2 * delay, (compute, timings)  # only the first block is waited for


def test_peak_device_bytes_is_the_ring_not_the_model():
    m = fresh(n=10)
    s = streamed(m, prefetch=1)
    with torch.no_grad():
        m(torch.randn(4, 32))
    block = s.block_bytes(0)
    assert s.stats.peak_device_bytes == 2 * block
    assert s.stats.peak_device_bytes < sum(s.block_bytes(i) for i in range(10)) / 4
    m2 = fresh(n=10)
    s2 = streamed(m2, prefetch=2, resident=[0])
    with torch.no_grad():
        m2(torch.randn(4, 32))
    assert s2.stats.peak_device_bytes == 3 * block + block


@pytest.mark.parametrize("how", ["exception", "interrupt"])
def test_failure_mid_forward_releases_everything(how):
    _, x, want = reference()
    m = fresh()
    s = streamed(m, prefetch=2, resident=[0])
    hooks = None
    if how == "exception":
        m.blocks[3].fail = True
    else:
        calls = []

        def interrupt():
            calls.append(1)
            if len(calls) == 4:
                raise InterruptedError("cancelled by the user")
        hooks = RunHooks(interrupt=interrupt)
    with pytest.raises((RuntimeError, InterruptedError)), torch.no_grad(), s.run_hooks(hooks):
        m(x)
    assert not s.in_session()
    live = s.live_buffers()
    assert len(live) == 1 and live[0].numel() == s.block_bytes(0)  # only the resident block's buffer
    assert all(p.device.type == "meta" for i in range(1, 6) for p in m.blocks[i].parameters())
    m.blocks[3].fail = False
    with torch.no_grad():
        assert torch.equal(m(x), want)


def test_no_growth_over_20_runs():
    _, x, want = reference()
    m = fresh()
    s = streamed(m, prefetch=1, resident=[2])
    with torch.no_grad():
        for _ in range(20):
            assert torch.equal(m(x), want)
            assert len(s.live_buffers()) == 1
    assert s.stats.forwards == 20 and s.stats.copies == 20 * 5


def test_session_spans_forwards_and_resyncs():
    """An explicit session keeps prefetching across forwards; a forward that stops early (blocks out
    of the expected order next time) re-syncs instead of binding the wrong block."""
    _, x, want = reference()
    full = reference()[0]
    full.stop_after = 2
    with torch.no_grad():
        want_short = full(x)
    m = fresh()
    s = streamed(m, prefetch=2)
    with torch.no_grad(), s.session():
        assert torch.equal(m(x), want)
        m.stop_after = 2
        assert torch.equal(m(x), want_short)
        m.stop_after = None
        assert torch.equal(m(x), want)
        assert torch.equal(m(x), want)
    assert not s.in_session() and s.live_buffers() == []


def test_block_outside_forward_is_an_error():
    m = fresh()
    streamed(m)
    with pytest.raises(RuntimeError, match="outside its root module"):
        m.blocks[0](torch.randn(2, 32))


def test_budget_plan_keeps_largest_blocks_and_fails_clearly():
    sizes = [100, 40, 100, 40, 40]
    plan = plan_residency(sizes, 10_000, fixed_bytes=10, activation_bytes=50)
    assert plan.resident == frozenset(range(5)) and plan.ring_bytes == 0
    plan = plan_residency(sizes, 10 + 50 + 200 + 2 * 40, fixed_bytes=10, activation_bytes=50)
    assert plan.resident == frozenset({0, 2}) and plan.ring_bytes == 80 and plan.prefetch == 1
    plan = plan_residency(sizes, 10 + 50 + 100, fixed_bytes=10, activation_bytes=50)
    assert plan.prefetch == 0 and plan.resident == frozenset()
    with pytest.raises(BudgetError) as info:
        plan_residency([2 ** 30] * 3, 2 ** 30, fixed_bytes=2 ** 29, activation_bytes=2 ** 29, what="the DiT")
    msg = str(info.value)
    assert "at least 2.00 GiB for the DiT" in msg and "a budget of 1.00 GiB" in msg and "vram_budget_gb" in msg


def test_budget_applies_at_run_time():
    _, x, want = reference()
    m = fresh()
    s = streamed(m, prefetch=1)
    block = s.block_bytes(0)
    s.set_budget(4 * block)  # ring of 2 + 2 resident
    with torch.no_grad():
        assert torch.equal(m(x), want)
    assert len(s.resident_blocks()) == 2 and s.stats.peak_device_bytes <= 4 * block
    s.set_budget(block // 2)
    with pytest.raises(BudgetError), torch.no_grad():
        m(x)
    s.set_budget(0)  # automatic on the CPU: everything streams
    with torch.no_grad():
        assert torch.equal(m(x), want)
    assert s.resident_blocks() == set()


def test_llama_layers_stream_bit_identically():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=5,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(0)
    ref = transformers.LlamaModel(cfg).eval()
    ids = torch.randint(0, 64, (1, 12))
    with torch.no_grad():
        want = ref(ids, output_hidden_states=True).hidden_states
    torch.manual_seed(0)
    model = transformers.LlamaModel(cfg).eval()
    states = [{k: v.clone() for k, v in layer.state_dict().items()} for layer in model.layers]
    for layer in model.layers:
        layer.to_empty(device="meta")
    s = BlockStreamer(model, model.layers, StateDictSource(states), "cpu", StreamSettings(prefetch=1))
    with torch.no_grad():
        got = model(ids, output_hidden_states=True).hidden_states
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    assert s.stats.copies == 5 and s.stats.peak_device_bytes == 2 * s.block_bytes(0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the CUDA path needs a GPU (bench/gpu_check.py runs it)")
@pytest.mark.parametrize("tier", ["pinned", "mapped"])
@pytest.mark.parametrize("prefetch", [0, 1, 3])
def test_cuda_streamed_equals_a_resident_cuda_run(tier, prefetch):
    """Streamed vs resident, both on the GPU (never a CPU reference: kernels differ), with every block
    spinning the compute stream so the GPU lags the host and a missing wait would read a slot mid-copy."""
    from stream_scenarios import streamed_equals_resident

    streamed_equals_resident(tier, prefetch)


def test_run_hooks_last_as_long_as_their_run():
    """A run's interrupt check and progress are arguments of that run: active inside it (resident blocks
    included), gone after it, whatever way it ends."""
    _, x, want = reference()
    m = fresh()
    s = streamed(m, prefetch=1, resident=[2])
    seen = []
    with torch.no_grad():
        with s.run_hooks(RunHooks(on_block=seen.append)):
            assert torch.equal(m(x), want)
        assert seen == list(range(6))
        with s.session(hooks=RunHooks(on_block=seen.append)):
            m(x)
        assert seen == 2 * list(range(6))
        m(x)  # no run hooks now
    assert seen == 2 * list(range(6))


def test_questions_about_the_plan_and_the_room_left():
    m = fresh()
    s = streamed(m, prefetch=1, resident=[1, 4], fixed_bytes=100)
    block = s.block_bytes(0)
    assert s.block_count() == 6 and s.streamed_bytes_per_pass() == 4 * block
    assert s.resident_blocks() == {1, 4} and s.describe_plan() is None
    assert s.activation_room() is None  # the CPU, no budget: nothing to plan with
    s.set_budget(10 * block)
    assert s.activation_room() == 10 * block - 100 - 2 * block
    with torch.no_grad():
        m(torch.randn(4, 32))
    assert s.describe_plan().startswith("6/6 blocks resident") and s.streamed_bytes_per_pass() == 0
