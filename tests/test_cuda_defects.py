"""The GPU-only defects a read of the CUDA path found, each checked on the CPU against the simulated CUDA
(stream_check.SimCuda) or the CPU backend: budget margins, latched CUDA errors, a resident block that
does not fit, per-session peaks, page-locked copies of resident blocks, staging kept across sessions,
work on the model's own GPU, RoPE cached per run, GGUF slabs sized for the device, converted blocks
converted once when RAM is short."""

import contextlib
import gc

import pytest
import torch

from hystream.errors import BudgetError
from hystream.offload import host_store
from hystream.offload.backend import CudaBackend, PinnedBuffer
from hystream.offload.settings import HostHandOver
from hystream.offload.source import StateDictSource
from hystream.sizes import GIB, MARGIN_MIN, automatic_budget, budget_margin
from stream_check import SimCuda, Violation
from test_streamer import fresh, reference, streamed


def sim_streamed(n=6, prefetch=1, resident=(), tier="pinned", device="cuda:0", settings=None, **sim_kw):
    _, x, want = reference(n=n)
    sim = SimCuda(device_index=torch.device(device).index, **sim_kw)
    m = fresh(n=n)
    s = streamed(m, prefetch=prefetch, resident=resident, host_tier=tier, backend=CudaBackend(device, cuda=sim),
                 **(settings or {}))
    return sim, m, s, x, want


def run(sim, m, x):
    with sim.compute_reads(), torch.no_grad():
        return m(x)


def finish(sim, s):
    s.detach()
    gc.collect()
    assert sim.pinned_live == 0
    sim.check()


# -- budgets keep a margin ----------------------------------------------------------------------------
def test_automatic_budget_keeps_a_margin():
    assert budget_margin(4 * GIB) == MARGIN_MIN and budget_margin(80 * GIB) == 4 * GIB
    assert automatic_budget(6 * GIB) == 6 * GIB - MARGIN_MIN and automatic_budget(GIB // 4) == 0


def test_the_streamer_plans_inside_the_margin():
    """Free memory for every block resident plus the ring: without the margin all would stay resident;
    with it, what falls inside the margin streams."""
    free = []
    sim, m, s, x, want = sim_streamed(settings={"budget_bytes": 0, "hand_over": HostHandOver(lambda: free[0])})
    block = s.block_bytes(0)
    free.append(MARGIN_MIN + 3 * block)  # room for 1 resident + a ring of 2 after the margin
    assert torch.equal(run(sim, m, x), want)
    plan = s.current_plan()
    assert len(plan.resident) == 1 and plan.total_bytes <= 3 * block
    finish(sim, s)


# -- a refused cudaHostRegister is cleared, not left for the next kernel -------------------------------
class NoClear(SimCuda):
    def clear_error(self):
        return 0


@pytest.mark.stream_protocol
@pytest.mark.parametrize("tier", ["pinned", "mapped"])
def test_a_refused_page_lock_does_not_fail_the_next_kernel(tier):
    sim, m, s, x, want = sim_streamed(tier=tier, refuse_pinning=True)
    assert torch.equal(run(sim, m, x), want)
    finish(sim, s)


@pytest.mark.stream_protocol
@pytest.mark.parametrize("tier", ["pinned", "mapped"])
def test_a_refused_unlock_does_not_fail_the_next_kernel(tier):
    sim, m, s, x, want = sim_streamed(tier=tier, refuse_unpinning=True)
    assert torch.equal(run(sim, m, x), want)
    s.detach()  # unlocks the arenas (pinned) or the staging buffers (mapped): each refused
    gc.collect()
    sim.empty(16, "cuda:0")  # the next launch on this thread
    sim.check()


def test_the_checker_sees_a_latched_error_left_behind():
    sim = NoClear(refuse_pinning=True)
    with pytest.raises(MemoryError):
        PinnedBuffer(sim, 4096)
    with pytest.raises(Violation, match="latched"):
        sim.empty(16, "cuda:0")


# -- a resident block that does not fit is our error ------------------------------------------------------
def test_out_of_memory_keeping_blocks_resident_is_a_budget_error():
    sim, m, s, x, want = sim_streamed(fail_alloc_after=2)
    with pytest.raises(BudgetError) as info:
        s.set_resident([0, 1, 2])
    msg = str(info.value)
    assert "kept resident" in msg and "vram_budget_gb" in msg and "out of memory with 2 blocks resident" in msg
    s.set_resident(())
    sim.fail_alloc_after = None
    assert torch.equal(run(sim, m, x), want)
    finish(sim, s)


# -- peaks are per session ----------------------------------------------------------------------------------
class Peaks(SimCuda):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.resets, self.peak = 0, 10 * GIB  # another model's peak before ours

    def reset_peak(self, device):
        self.resets += 1
        self.peak = 0

    def max_allocated(self, device):
        return self.peak

    def max_reserved(self, device):
        return self.peak + 7


def test_peaks_are_reset_per_session_and_report_reserved():
    _, x, want = reference()
    sim = Peaks()
    m = fresh()
    s = streamed(m, prefetch=1, backend=CudaBackend("cuda:0", cuda=sim))
    assert torch.equal(run(sim, m, x), want)
    assert sim.resets == 1 and s.stats.peak_device_bytes == 0 and s.stats.peak_reserved_bytes == 7
    assert "reserved" in s.stats.summary()
    finish(sim, s)


# -- resident blocks hold no page-locked copy ------------------------------------------------------------
def test_a_fully_resident_model_locks_no_memory():
    sim, m, s, x, want = sim_streamed(resident=range(6))
    assert torch.equal(run(sim, m, x), want)
    assert s.store.held_bytes == 0 and sim.pinned_live == 0
    finish(sim, s)


def test_blocks_made_resident_release_their_arenas_and_refill_when_streamed_again(monkeypatch):
    monkeypatch.setattr(host_store, "ARENA_BYTES", 1)  # one block per arena
    sim, m, s, x, want = sim_streamed()
    assert torch.equal(run(sim, m, x), want)
    all_held = s.store.held_bytes
    s.set_resident([1, 4])
    assert s.store.held_bytes == all_held - s.block_bytes(1) - s.block_bytes(4)
    assert torch.equal(run(sim, m, x), want)
    s.set_resident(())
    assert torch.equal(run(sim, m, x), want)
    assert s.store.held_bytes == all_held
    finish(sim, s)


# -- staging buffers are kept across sessions --------------------------------------------------------------
class Registrations(SimCuda):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.registered = 0

    def host_register(self, t):
        self.registered += 1
        return super().host_register(t)


def test_staging_is_locked_once_across_sessions_and_released_after_a_failure():
    _, x, want = reference()
    sim = Registrations()
    m = fresh()
    s = streamed(m, prefetch=1, host_tier="mapped", backend=CudaBackend("cuda:0", cuda=sim))
    for _ in range(3):  # three prompts: three bare forwards, each its own session
        assert torch.equal(run(sim, m, x), want)
    assert sim.registered == 2 and sim.pinned_live > 0  # the ring's two staging buffers, locked once
    m.blocks[3].fail = True
    with pytest.raises(RuntimeError):
        run(sim, m, x)
    assert sim.pinned_live == 0  # a failed session gives them back
    m.blocks[3].fail = False
    assert torch.equal(run(sim, m, x), want)
    finish(sim, s)


# -- every page-locking call runs on the model's GPU ----------------------------------------------------------
@pytest.mark.stream_protocol
@pytest.mark.parametrize("tier", ["pinned", "mapped"])
def test_a_model_on_a_second_gpu_never_works_on_the_first(tier):
    sim, m, s, x, want = sim_streamed(tier=tier, device="cuda:1")
    with sim.compute_reads(), torch.no_grad(), s.session():
        for _ in range(2):
            assert torch.equal(m(x), want)
    finish(sim, s)


def test_the_checker_sees_work_on_the_wrong_gpu(monkeypatch):
    monkeypatch.setattr(CudaBackend, "context", lambda self: contextlib.nullcontext())
    monkeypatch.setattr(CudaBackend, "worker", lambda self: contextlib.nullcontext())
    sim, m, s, x, _ = sim_streamed(device="cuda:1")
    run(sim, m, x)
    s.detach()
    with pytest.raises(Violation, match="cuda:0 current for a model on cuda:1"):
        sim.check()


def test_elapsed_time_needs_timing_events_the_host_waited_for():
    sim = SimCuda()
    a, b = sim.Event(enable_timing=False), sim.Event(enable_timing=True)
    a.record(sim.default)
    b.record(sim.default)
    with pytest.raises(Violation, match="without enable_timing"):
        a.elapsed_time(b)
    c = sim.Event(enable_timing=True)
    c.record(sim.default)
    with pytest.raises(Violation, match="before the host waited"):
        b.elapsed_time(c)
    c.synchronize()
    assert b.elapsed_time(c) == 0.0


# -- RoPE is built once per run --------------------------------------------------------------------------------
def test_rope_is_built_once_per_size_and_dropped_after_the_stage(tiny_dit_sd, monkeypatch, tmp_path):
    from hystream.loading import load_dit
    from hystream.models import dit_base as dit_module
    from tiny_dit import dit_inputs, save_layout

    calls = []
    real = dit_module.grid_rope
    monkeypatch.setattr(dit_module, "grid_rope", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    dit = load_dit(save_layout(tiny_dit_sd, "comfy", str(tmp_path))[0], "cpu")
    args = dit_inputs()
    with torch.no_grad():
        first = dit(**args)
        second = dit(**args)
    assert len(calls) == 1 and torch.equal(first, second)
    dit.release_device()
    with torch.no_grad():
        dit(**args)
    assert len(calls) == 2
    dit.close()


# -- GGUF decodes in device-sized slabs -------------------------------------------------------------------------
def test_gguf_slabs_are_larger_on_a_gpu(monkeypatch):
    from hystream.memory_probe import fake_mode
    from hystream.quant import dequant
    from hystream.quant.kinds import KINDS

    kind = KINDS["Q4_K"]
    slabs = {}
    for device in ("cpu", "cuda"):
        count = []
        real = dequant.DECODERS["Q4_K"]
        monkeypatch.setitem(dequant.DECODERS, "Q4_K", lambda b, real=real, count=count: count.append(1) or real(b))
        with fake_mode():
            data = torch.empty(12288, kind.row_bytes(3072), dtype=torch.uint8, device=device)
            dequant.dequantize(data, kind, 3072, torch.bfloat16)
        slabs[device] = len(count)
    assert slabs["cpu"] == 10 and slabs["cuda"] == 5, slabs


# -- converted blocks are converted once, even when RAM is short --------------------------------------------------
class CountingConversion(StateDictSource):
    """A source whose filling 'converts' (like bf16 → fp8 on the way): counts the conversions."""

    def __init__(self, blocks):
        super().__init__(blocks)
        self.conversions = 0

    def computed(self, index):
        return True

    def fill(self, index, out):
        self.conversions += 1
        super().fill(index, out)


@pytest.mark.parametrize("ram", ["plenty", "short"])
def test_converted_blocks_are_converted_once(monkeypatch, tmp_path, ram):
    monkeypatch.setenv("HYSTREAM_SPILL_DIR", str(tmp_path))
    if ram == "short":
        monkeypatch.setattr(host_store, "ram_left", lambda reserve=0: 1 << 20)  # 1 MiB: nothing kept in RAM
    _, x, want = reference()
    m = fresh()
    s = streamed(m, source_cls=CountingConversion, prefetch=1)
    with torch.no_grad():
        for _ in range(3):
            assert torch.equal(m(x), want)
    assert s.store.source.conversions == 6  # each block once, not once per forward
    assert (s.store._converted == {}) == (ram == "short")
    s.detach()
