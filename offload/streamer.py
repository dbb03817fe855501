"""The block streamer: runs a module whose blocks execute in order with only a ring of blocks on the
compute device, each arriving up to `prefetch` blocks ahead of the compute.

It attaches with forward hooks, so any `nn.Module` list of blocks works (our DiT blocks, transformers'
Llama layers). A worker thread brings each block into its ring slot; per block, the pre-hook makes the
compute wait for that block's copy, binds its parameters to views of the slot and queues the next copy;
the post-hook records "compute done" on the slot and unbinds. Blocks marked resident stay bound to their
own device buffers and are skipped by the stream. Device operations go through a backend (backend.py).

The ordering protocol on a GPU (events only; the compute thread never waits for the host):
- a session's copy stream first waits for the compute stream: fresh ring slots may be memory the
  allocator took back from kernels the compute stream still has queued;
- a copy into a slot waits for the event recorded after the previous block computed from that slot;
- the compute waits for the copy's event before the block runs;
- a page-locked staging buffer (the mapped tier) is refilled by the host only after the copy out of it
  has finished (a host wait on its event, in the worker thread);
- when the session closes, the compute stream waits for the copy stream (ring slots are freed in its
  order) and the host waits for both (staging buffers are freed, stall timings read).
Copies in flight never exceed the ring: with fewer streamed blocks than `prefetch + 1`, the effective
prefetch is the ring size minus one, so a copy never lands in the slot being computed from.

A session holds the ring; it opens with the root module's forward (or explicitly, around a sampling
loop, so the next step's first blocks prefetch during the last blocks of this step) and closes in all
cases — exceptions, Cancel and Ctrl-C included — releasing every ring slot and staging buffer.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from ..errors import BudgetError, format_bytes
from .backend import OOM_ERRORS, backend_for
from .binding import bind, unbind
from .budget import Plan, automatic_budget, plan_residency
from .host_store import HostStore
from .source import BlockSource
from .staging import StagingRing
from .stats import StreamStats

log = logging.getLogger("hystream")


class _Session:
    def __init__(self, order: list[int], ring: int, implicit: bool):
        self.order = order  # streamed block indices in run order
        self.pos = {b: p for p, b in enumerate(order)}
        self.ring = ring
        self.implicit = implicit  # opened by a bare forward: do not prefetch past its last block
        self.slots: list[torch.Tensor] = []
        self.free_events: list = [None] * ring  # the compute from this slot finished
        self.futures: dict[int, Future] = {}
        self.next_submit = 0  # sequence number of the next block copy to queue
        self.next_run = 0  # sequence number of the next streamed block to compute
        self.bound: dict[int, int] = {}  # block index → sequence number, while it computes
        self.executor: ThreadPoolExecutor | None = None
        self.compute = None  # the stream the blocks compute on
        self.copy_stream = None
        self.stalls: list = []  # (compute ready, copy done) event pairs: the GPU's wait per block
        self.hold: int | None = None  # no copy beyond this sequence number until the pass decides (see pause_after)


class BlockStreamer:
    def __init__(self, root: nn.Module, blocks: Sequence[nn.Module], source: BlockSource,
                 device: torch.device | str, *, prefetch: int = 1, resident: Iterable[int] = (),
                 host_tier: str = "mapped", fixed_bytes: int = 0, backend=None, ram_reserve: int = 0):
        if len(blocks) != len(source):
            raise ValueError(f"{len(blocks)} blocks but the source describes {len(source)}")
        self.root = root
        self.blocks = list(blocks)
        self.source = source
        self.backend = backend or backend_for(device)
        self.device = self.backend.device
        self.requested_prefetch = self.prefetch = max(0, int(prefetch))
        self.store = HostStore(source, "mapped" if self.backend.host_is_device else host_tier, self.backend, ram_reserve)
        self.layouts = [source.layout(i) for i in range(len(blocks))]
        self._meta = [{s.name: torch.empty(s.shape, dtype=s.dtype, device="meta") for s in lay.slots}
                      for lay in self.layouts]
        self.fixed_bytes = fixed_bytes  # device bytes held outside the blocks (CPU accounting)
        self.stats = StreamStats(blocks_total=len(blocks))
        self.budget_bytes: int | None = None  # None: residency as set; 0: automatic; else bytes
        self.reserve_bytes = 0  # device memory an automatic budget leaves to others (the host's reserve)
        # a host that shares the device may say what is free (its evictable models included) and free what
        # a plan needs before we allocate it; without one, the backend's free memory is used as it is
        self.free_bytes_fn: Callable[[], int | None] | None = None
        self.make_room: Callable[[int], None] | None = None
        self.fixed_on_device = False  # the fixed (non-block) weights are on the device now (their owner says)
        self.activation_estimate: Callable[[tuple, dict], int] | None = None  # from the forward's inputs
        self.plan: Plan | None = None
        self.what = "the model"  # named in budget errors
        self.interrupt: Callable[[], None] | None = None  # raises to abort between blocks
        self.on_block: Callable[[int], None] | None = None  # progress: called after each block
        self._pause_block: int | None = None  # see pause_after
        self._resident: dict[int, torch.Tensor] = {}
        self._buffers: weakref.WeakSet = weakref.WeakSet()  # every device buffer we allocate, for leak checks
        self._live_bytes = 0  # host-device bytes of our buffers alive now, counted at allocation and at free
        self._session: _Session | None = None
        self._staging = StagingRing(self.backend)  # mapped tier on a GPU; kept across sessions
        self._hooks: list = []
        for i, block in enumerate(self.blocks):
            unbind(block, self._meta[i], self._meta[i])  # validates names, frees nothing real yet
        self.set_resident(resident)
        self._attach()

    # -- set-up ------------------------------------------------------------------------------------
    def _attach(self) -> None:
        # The root's forward is wrapped (not hooked) so the session also closes on KeyboardInterrupt:
        # PyTorch's always_call forward hooks run for Exception only.
        inner = self.root.forward

        @functools.wraps(inner)
        def forward(*args, **kwargs):
            opened = self._root_forward(args, kwargs)
            try:
                out = inner(*args, **kwargs)
            except BaseException:
                if opened:
                    self._close(implicit=True, failed=True)
                raise
            if opened:
                self._close(implicit=True)
            return out

        self.root.forward = forward
        for i, block in enumerate(self.blocks):
            self._hooks.append(block.register_forward_pre_hook(lambda m, a, i=i: self._before(i)))
            self._hooks.append(block.register_forward_hook(lambda m, a, o, i=i: self._after(i), always_call=True))

    def detach(self) -> None:
        """Remove the hooks and free everything (resident blocks, the page-locked host store)."""
        self._close(implicit=False, force=True)
        self._staging.release()
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        self.root.__dict__.pop("forward", None)
        self.set_resident(())
        self.store.release()

    def _root_forward(self, args: tuple, kwargs: dict) -> bool:
        self.stats.forwards += 1
        if self._session is None and self.budget_bytes is not None:
            estimate = self.activation_estimate(args, kwargs) if self.activation_estimate else 0
            self.apply_budget(estimate)
        return self._open(implicit=True)

    def apply_budget(self, activation_bytes: int = 0) -> Plan | None:
        """Choose resident blocks and prefetch depth for `budget_bytes` (0 = free device memory).
        On the CPU an automatic budget streams every block: resident and mapped blocks are both RAM
        there, and the page cache already keeps hot pages without growing the process."""
        if self.budget_bytes is None:
            return None
        budget = self.budget_bytes
        if budget == 0:
            free = self.free_bytes_fn() if self.free_bytes_fn else self.backend.free_bytes(self.reserve_bytes)
            if free is None:
                self.set_resident(())
                return None
            held = sum(b.numel() for b in self._resident.values()) + (self.fixed_bytes if self.fixed_on_device else 0)
            budget = automatic_budget(free + held)  # what we hold already counts as usable; less the margin
        sizes = [lay.nbytes for lay in self.layouts]
        plan = plan_residency(sizes, budget, fixed_bytes=self.fixed_bytes, activation_bytes=activation_bytes,
                              prefetch=self.requested_prefetch, what=self.what)
        if self.make_room is not None:
            self.set_resident(())
            self.make_room(plan.total_bytes)
        self.prefetch = plan.prefetch
        self.set_resident(plan.resident)
        self.plan = plan
        return plan

    @property
    def resident(self) -> set[int]:
        return set(self._resident)

    def block_bytes(self, index: int) -> int:
        return self.layouts[index].nbytes

    def set_resident(self, indices: Iterable[int]) -> None:
        """Keep these blocks on the device between runs; the others stream."""
        if self._session is not None:
            raise RuntimeError("set_resident() cannot change residency while a run is in progress")
        wanted = set(indices)
        for i in list(self._resident):
            if i not in wanted:
                unbind(self.blocks[i], self._meta[i], self._meta[i])
                del self._resident[i]
        for i in sorted(wanted - set(self._resident)):
            self._resident[i] = buf = self._load_to_device(i)
            bind(self.blocks[i], self.layouts[i].views(buf))
        if not self.backend.host_is_device:
            self.store.drop(self._resident)  # resident blocks need no page-locked copy
        streamed = len(self.blocks) - len(self._resident)
        self.stats.blocks_resident, self.stats.blocks_streamed = len(self._resident), streamed
        self.stats.ring_slots = min(self.prefetch + 1, streamed)

    def _load_to_device(self, i: int) -> torch.Tensor:
        n = self.layouts[i].nbytes
        try:
            buf = self._alloc(n)
        except OOM_ERRORS as e:
            raise BudgetError(
                f"{format_bytes(n)} on {self.device} for block {i} of {self.what}, kept resident",
                f"out of memory with {len(self._resident)} blocks resident ({str(e).splitlines()[0][:200]})",
                "lower vram_budget_gb (0 = automatic) so fewer blocks stay resident, or free memory held by "
                "other programs") from None
        if self.backend.host_is_device:
            self.store.fill(i, buf)
            return buf
        host = self.store.held(i)  # an existing page-locked copy; a resident block never locks a new one
        if host is None:
            host = torch.empty(n, dtype=torch.uint8)
            self.store.fill(i, host)
        self.backend.upload(buf, host)  # the host waits: set-up time, not the hot path
        return buf

    # -- sessions ----------------------------------------------------------------------------------
    def live_buffers(self) -> list[torch.Tensor]:
        """Device and ring buffers still alive (resident blocks' included); for leak checks."""
        return list(self._buffers)

    def _alloc(self, nbytes: int) -> torch.Tensor:
        buf = self.backend.alloc(nbytes)
        self._buffers.add(buf)
        if self.backend.host_is_device:  # a GPU's allocator measures itself (max_memory_allocated)
            self._live_bytes += nbytes
            weakref.finalize(buf.untyped_storage(), self._freed, nbytes)  # the memory, not this view of it
            self.stats.peak_device_bytes = max(self.stats.peak_device_bytes, self.fixed_bytes + self._live_bytes)
        return buf

    def _freed(self, nbytes: int) -> None:
        self._live_bytes -= nbytes

    @contextlib.contextmanager
    def session(self, activation_bytes: int | None = None):
        """Hold the ring across several forwards (a sampling loop): copies never stop between steps.
        With a budget set, residency is planned once here for `activation_bytes`."""
        if self._session is None and self.budget_bytes is not None:
            self.apply_budget(activation_bytes or 0)
        opened = self._open(implicit=False)
        try:
            yield self
        except BaseException:
            if opened:
                self._close(implicit=False, failed=True)
            raise
        if opened:
            self._close(implicit=False)

    def _open(self, implicit: bool) -> bool:
        if self._session is not None:
            return False
        order = [i for i in range(len(self.blocks)) if i not in self._resident]
        ring = min(self.prefetch + 1, len(order))
        s = _Session(order, ring, implicit)
        self._session = s
        try:
            self.backend.reset_peak()  # this session's peak, not the device's lifetime one
            slot_bytes = max((self.layouts[i].nbytes for i in order), default=0)
            s.compute = self.backend.current_stream()
            try:
                for _ in range(ring):
                    s.slots.append(self._alloc(slot_bytes))
            except OOM_ERRORS as e:
                raise BudgetError(
                    f"{ring} ring slot(s) of {format_bytes(slot_bytes)} on {self.device} for {self.what}",
                    f"out of memory after {len(s.slots)} ({str(e).splitlines()[0][:200]})",
                    "lower prefetch_blocks (ring = prefetch + 1 slots), set a vram_budget_gb that fits, or "
                    "free memory held by other programs") from None
            s.hold = self._hold_for(s, 0)
            if order:
                s.copy_stream = self.backend.new_stream()
                s.copy_stream.wait_stream(s.compute)
                s.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hystream-stream")
            self._pump()
        except BaseException:
            self._close(implicit=implicit, force=True, failed=True)
            raise
        return True

    def _close(self, implicit: bool, force: bool = False, failed: bool = False) -> None:
        """End the session: every copy drained, the ring freed in the compute stream's order. Staging
        buffers stay for the next session unless it failed (Cancel, an error) or the model is dropped."""
        s = self._session
        if s is None or (s.implicit != implicit and not force):
            return
        self._session = None
        try:
            for fut in s.futures.values():
                fut.cancel()
            for fut in s.futures.values():
                if not fut.cancelled():
                    with contextlib.suppress(BaseException):
                        self.backend.result(fut)
            if s.executor is not None:
                s.executor.shutdown(wait=True)
        finally:
            for i in list(s.bound):
                unbind(self.blocks[i], self._meta[i], self._meta[i])
            if s.copy_stream is not None:
                s.compute.wait_stream(s.copy_stream)  # the ring is freed in the compute stream's order
                end = self.backend.event(blocking=True)
                end.record(s.compute)
                end.synchronize()  # every copy and compute of the session done: staging can go, timings read
                self._account_stalls(s)
            peak, reserved = self.backend.peak_bytes(), self.backend.peak_reserved_bytes()
            if peak is not None:
                self.stats.peak_device_bytes = max(self.stats.peak_device_bytes, peak)
                self.stats.peak_reserved_bytes = max(self.stats.peak_reserved_bytes, reserved)
            s.slots.clear()
            if failed or force:
                self._staging.release()
            s.futures.clear()

    def _account_stalls(self, s: _Session) -> None:
        for ready, done in s.stalls:
            self.stats.stall_seconds += max(0.0, ready.elapsed_time(done)) / 1000.0
        s.stalls.clear()

    # -- passes that may stop early (step caching) -----------------------------------------------------
    def pause_after(self, block: int | None) -> None:
        """In each pass (one run through the blocks), copy nothing beyond `block` until the pass decides:
        `resume()` (it goes on) or `end_pass()` (the rest of this pass is skipped: nothing of it crosses
        the bus, and the next pass's first blocks are prefetched instead). None: no pause."""
        self._pause_block = block
        if self._session is not None:
            self._session.hold = self._hold_for(self._session, self._session.next_run)

    def _hold_for(self, s: _Session, seq: int) -> int | None:
        """The last sequence number the pass containing `seq` may copy before its decision."""
        if self._pause_block is None or not s.order:
            return None
        L = len(s.order)
        before = sum(1 for i in s.order if i <= self._pause_block)  # streamed blocks up to the decision
        return seq - seq % L + before - 1

    def resume(self) -> None:
        """The current pass decided to go on: prefetch past the decision point (up to the next pass's)."""
        s = self._session
        if s is not None and s.hold is not None:
            s.hold += len(s.order)
            self._pump()

    def end_pass(self) -> None:
        """The current pass decided to skip its remaining blocks: the next block to run is the next pass's
        first. Nothing after the decision point was copied (the pause held it)."""
        s = self._session
        if s is None or not s.order:
            return
        L = len(s.order)
        start = s.next_run + (-s.next_run) % L  # the next pass's first block
        for seq in [q for q in s.futures if q >= start + L]:  # nothing should be there: drop defensively
            s.futures.pop(seq).cancel()
        s.next_run = start
        s.next_submit = max(s.next_submit, start)
        if s.hold is not None:
            s.hold = self._hold_for(s, start)
        self._pump()

    def read_block(self, index: int) -> dict[str, torch.Tensor]:
        """A copy of block `index`'s tensors in host memory (for small probes the caller keeps elsewhere)."""
        buf = torch.empty(self.layouts[index].nbytes, dtype=torch.uint8)
        self.store.fill(index, buf)
        return self.layouts[index].views(buf)

    # -- the pipeline ------------------------------------------------------------------------------
    def _pump(self) -> None:
        """Queue copies up to `prefetch` blocks ahead of the next block to run, never more than the ring
        holds besides the block computing."""
        s = self._session
        if not s.order:
            return
        limit = s.next_run + min(self.prefetch, s.ring - 1)
        if s.implicit:
            limit = min(limit, len(s.order))
        if s.hold is not None:
            limit = min(limit, s.hold + 1)
        while s.next_submit < limit:
            seq = s.next_submit
            s.futures[seq] = self.backend.submit(s.executor, self._copy, s, seq)
            s.next_submit += 1

    def _copy(self, s: _Session, seq: int):
        """Worker thread: bring block `seq` into its ring slot. Returns the event of the copy.
        Runs in inference mode: grad modes are per thread, and the ring may have been allocated under the
        host's inference_mode (ComfyUI runs nodes in it), whose tensors refuse in-place writes outside it."""
        with torch.inference_mode(), self.backend.worker():
            return self._copy_block(s, seq)

    def _copy_block(self, s: _Session, seq: int):
        index, slot = s.order[seq % len(s.order)], seq % s.ring
        nbytes = self.layouts[index].nbytes
        dst = s.slots[slot][:nbytes]
        if self.backend.host_is_device:  # the worker reads the file straight into the slot
            self.store.fill(index, dst)
            event = None
        else:
            src = self.store.packed(index)
            pageable = False
            if src is None:  # served from the file through a staging buffer
                src, pageable = self._staging.take(slot, nbytes, max(self.layouts[i].nbytes for i in s.order),
                                                   self.what)
                self.backend.host_write(src)
                self.store.fill(index, src)
            with self.backend.on(s.copy_stream):
                if s.free_events[slot] is not None:
                    s.copy_stream.wait_event(s.free_events[slot])
                if pageable:  # no page-locked memory to be had: a copy the host waits for (slower, correct)
                    self.backend.upload(dst, src)
                else:
                    self.backend.copy(dst, src)
                event = self.backend.event(timing=True, blocking=True)
                event.record(s.copy_stream)
            self._staging.copied(slot, event)
        self.stats.bytes_copied += nbytes
        self.stats.copies += 1
        return event

    def _before(self, i: int) -> None:
        if self.interrupt is not None:
            self.interrupt()
        s = self._session
        if s is None:
            raise RuntimeError("a streamed block ran outside its root module's forward; call it through "
                               "the model, or wrap the calls in `with streamer.session():`")
        if i in self._resident:
            return
        seq = s.next_run
        if s.order[seq % len(s.order)] != i:
            seq = self._resync(i)
        fut = s.futures.pop(seq, None) or self.backend.submit(s.executor, self._copy, s, seq)
        t0 = time.perf_counter()
        event = self.backend.result(fut)
        self.stats.wait_seconds += time.perf_counter() - t0
        if event is not None:
            ready = self.backend.event(timing=True)
            ready.record(s.compute)
            s.compute.wait_event(event)
            s.stalls.append((ready, event))
        bind(self.blocks[i], self.layouts[i].views(s.slots[seq % s.ring]))
        s.bound[i] = seq
        s.next_run = seq + 1
        s.next_submit = max(s.next_submit, s.next_run)
        self._pump()

    def _resync(self, i: int) -> int:
        """Blocks ran out of the expected order (a forward aborted and restarted): drain and restart at i."""
        s = self._session
        for fut in s.futures.values():
            self.backend.result(fut)
        s.futures.clear()
        L = len(s.order)
        seq = s.next_submit + (s.pos[i] - s.next_submit) % L
        s.next_run = s.next_submit = seq
        return seq

    def _after(self, i: int) -> None:
        s = self._session
        if s is not None and i in s.bound:
            seq = s.bound.pop(i)
            done = self.backend.event()
            done.record(s.compute)
            s.free_events[seq % s.ring] = done
            unbind(self.blocks[i], self._meta[i], self._meta[i])
        if self.on_block is not None:
            self.on_block(i)

    def __repr__(self) -> str:
        gib = sum(lay.nbytes for lay in self.layouts) / 1024 ** 3
        return (f"BlockStreamer({len(self.blocks)} blocks, {gib:.2f} GiB, {len(self._resident)} resident, "
                f"prefetch {self.prefetch}, device {self.device}, host tier {self.store.tier})")
