"""One session of the streamer: the ring of device slots the streamed blocks pass through, the worker
that copies them in, and the sequence numbers that tie each copy to its slot.

Streamed blocks run in a fixed order; the n-th block run in a session (its sequence number) lands in
slot n % slots. `next_submit` is the next copy to queue, `next_run` the next block to compute; copies
run ahead of the compute by at most `prefetch` (and never more than the ring holds besides the block
computing). The ordering protocol itself is described at the top of streamer.py.

A pass (one run through the blocks) may hold its copies at a block until it decides whether it goes on
(step caching, see `pause_after`): nothing beyond `hold` is copied until then.
"""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from ..errors import BudgetError, format_bytes
from .backend import OOM_ERRORS


class Ring:
    def __init__(self, order: list[int], prefetch: int, implicit: bool, pause_block: int | None, *,
                 sizes: list[int], skeletons, backend, store, staging, ledger, stats, what: str):
        self.order = order  # streamed block indices in run order
        self.pos = {b: p for p, b in enumerate(order)}
        self.n_slots = min(prefetch + 1, len(order))
        self.prefetch = prefetch
        self.implicit = implicit  # opened by a bare forward: do not prefetch past its last block
        self.pause_block = pause_block
        self.sizes, self.skeletons, self.backend, self.store = sizes, skeletons, backend, store
        self.staging, self.ledger, self.stats, self.what = staging, ledger, stats, what
        self.slots: list[torch.Tensor] = []
        self.free_events: list = [None] * self.n_slots  # the compute from this slot finished
        self.futures: dict[int, Future] = {}
        self.next_submit = 0  # sequence number of the next block copy to queue
        self.next_run = 0  # sequence number of the next streamed block to compute
        self.bound: dict[int, int] = {}  # block index → sequence number, while it computes
        self.executor: ThreadPoolExecutor | None = None
        self.compute = None  # the stream the blocks compute on
        self.copy_stream = None
        self.stalls: list = []  # (compute ready, copy done) event pairs: the GPU's wait per block
        self.hold: int | None = None  # no copy beyond this sequence number until the pass decides

    # -- open and close ----------------------------------------------------------------------------------
    def open(self) -> None:
        """Allocate the slots and queue the first copies. On failure the caller closes it (failed)."""
        self.backend.reset_peak()  # this session's peak, not the device's lifetime one
        slot_bytes = max((self.sizes[i] for i in self.order), default=0)
        self.compute = self.backend.current_stream()
        try:
            for _ in range(self.n_slots):
                self.slots.append(self.ledger.alloc(slot_bytes))
        except OOM_ERRORS as e:
            raise BudgetError(
                f"{self.n_slots} ring slot(s) of {format_bytes(slot_bytes)} on {self.backend.device} for {self.what}",
                f"out of memory after {len(self.slots)} ({str(e).splitlines()[0][:200]})",
                "lower prefetch_blocks (ring = prefetch + 1 slots), set a vram_budget_gb that fits, or "
                "free memory held by other programs") from None
        self.staging.fit(slot_bytes)
        self.hold = self._hold_for(0)
        if self.order:
            self.copy_stream = self.backend.new_stream()
            self.copy_stream.wait_stream(self.compute)
            self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hystream-stream")
        self._pump()

    def close(self, failed: bool) -> None:
        """Every copy drained, the ring freed in the compute stream's order. Staging buffers stay for the
        next session unless this one failed (Cancel, an error) or the model is dropped."""
        try:
            for fut in self.futures.values():
                fut.cancel()
            for fut in self.futures.values():
                if not fut.cancelled():
                    with contextlib.suppress(BaseException):
                        self.backend.result(fut)
            if self.executor is not None:
                self.executor.shutdown(wait=True)
        finally:
            for i in list(self.bound):
                self.skeletons.unbind(i)
            if self.copy_stream is not None:
                self.compute.wait_stream(self.copy_stream)  # the ring is freed in the compute stream's order
                end = self.backend.event(blocking=True)
                end.record(self.compute)
                end.synchronize()  # every copy and compute of the session done: staging can go, timings read
                self.stats.add_stalls(self.stalls)
                self.stalls.clear()
            self.stats.add_peaks(self.backend.peak_bytes(), self.backend.peak_reserved_bytes())
            self.slots.clear()
            if failed:
                self.staging.release()
            self.futures.clear()

    # -- each block ----------------------------------------------------------------------------------------
    def enter(self, i: int) -> None:
        """Streamed block `i` is about to run: the compute waits for its copy, and it is bound to its slot."""
        seq = self.next_run
        if self.order[seq % len(self.order)] != i:
            seq = self._resync(i)
        fut = self.futures.pop(seq, None) or self.backend.submit(self.executor, self._copy, seq)
        t0 = time.perf_counter()
        event = self.backend.result(fut)
        self.stats.wait_seconds += time.perf_counter() - t0
        if event is not None:
            ready = self.backend.event(timing=True)
            ready.record(self.compute)
            self.compute.wait_event(event)
            self.stalls.append((ready, event))
        self.skeletons.bind(i, self.slots[seq % self.n_slots])
        self.bound[i] = seq
        self.next_run = seq + 1
        self.next_submit = max(self.next_submit, self.next_run)
        self._pump()

    def leave(self, i: int) -> None:
        """Block `i` was computed (or failed): its slot is free once the compute queued so far is done."""
        if i in self.bound:
            seq = self.bound.pop(i)
            done = self.backend.event()
            done.record(self.compute)
            self.free_events[seq % self.n_slots] = done
            self.skeletons.unbind(i)

    def _resync(self, i: int) -> int:
        """Blocks ran out of the expected order (a forward aborted and restarted): drain and restart at i."""
        for fut in self.futures.values():
            self.backend.result(fut)
        self.futures.clear()
        seq = self.next_submit + (self.pos[i] - self.next_submit) % len(self.order)
        self.next_run = self.next_submit = seq
        return seq

    def _pump(self) -> None:
        """Queue copies up to `prefetch` blocks ahead of the next block to run, never more than the ring
        holds besides the block computing."""
        if not self.order:
            return
        limit = self.next_run + min(self.prefetch, self.n_slots - 1)
        if self.implicit:
            limit = min(limit, len(self.order))
        if self.hold is not None:
            limit = min(limit, self.hold + 1)
        while self.next_submit < limit:
            seq = self.next_submit
            self.futures[seq] = self.backend.submit(self.executor, self._copy, seq)
            self.next_submit += 1

    def _copy(self, seq: int):
        """Worker thread: bring block `seq` into its ring slot; returns the copy's event (None: done already).
        Runs in inference mode: grad modes are per thread, and the ring may have been allocated under the
        host's inference_mode (ComfyUI runs nodes in it), whose tensors refuse in-place writes outside it."""
        with torch.inference_mode(), self.backend.worker():
            index, slot = self.order[seq % len(self.order)], seq % self.n_slots
            nbytes = self.sizes[index]
            event = self.backend.bring(self.slots[slot][:nbytes], index, self.store, self.staging, slot,
                                       self.copy_stream, self.free_events[slot])
            self.stats.bytes_copied += nbytes
            self.stats.copies += 1
            return event

    # -- passes that may stop early (step caching) -----------------------------------------------------
    def pause_after(self, block: int | None) -> None:
        self.pause_block = block
        self.hold = self._hold_for(self.next_run)

    def _hold_for(self, seq: int) -> int | None:
        """The last sequence number the pass containing `seq` may copy before its decision."""
        if self.pause_block is None or not self.order:
            return None
        before = sum(1 for i in self.order if i <= self.pause_block)  # streamed blocks up to the decision
        return seq - seq % len(self.order) + before - 1

    def resume(self) -> None:
        if self.hold is not None:
            self.hold += len(self.order)
            self._pump()

    def end_pass(self) -> None:
        if not self.order:
            return
        L = len(self.order)
        start = self.next_run + (-self.next_run) % L  # the next pass's first block
        for seq in [q for q in self.futures if q >= start + L]:  # nothing should be there: drop defensively
            self.futures.pop(seq).cancel()
        self.next_run = start
        self.next_submit = max(self.next_submit, start)
        if self.hold is not None:
            self.hold = self._hold_for(start)
        self._pump()
