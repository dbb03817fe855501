"""A simulated CUDA that checks the streamer's ordering protocol on the CPU.

`SimCuda` has the face of `offload.backend.TorchCuda` (streams, events, allocation, asynchronous copies,
host registration), so `CudaBackend(device, cuda=SimCuda())` runs the streamer's real CUDA code path on
CPU tensors. Data moves when a copy is issued; what is checked is the happens-before order CUDA would
guarantee, with vector clocks:

- every stream and every host thread has a clock; an operation a host thread enqueues on a stream is
  ordered after what that thread did before (launch order); `event.record(s)` snapshots s's clock,
  `s.wait_event(e)` / `s.wait_stream(t)` merge into s, `event.synchronize()` / `stream.synchronize()`
  merge into the waiting host thread, handing work to a worker thread and joining its result merge
  between host threads;
- accesses are tracked per byte range of every buffer: an asynchronous copy writes its destination and
  reads its source on its stream; the compute thread's ops (seen by a TorchDispatchMode) read the ring,
  staging and resident buffers on the compute stream; the host announces its writes into page-locked
  buffers; a fresh device allocation counts as a write by its stream at the time of allocation (the
  caching allocator hands back memory that kernels already queued on that stream may still use);
- it reports a read not ordered after the last write, a write not ordered after every earlier read and
  write, a host write into a page-locked buffer a copy may still read, and memory freed (device) or
  unlocked (host) while another stream may still use it;
- what real CUDA also does and a CPU never shows: a refused cudaHostRegister latches its error as the
  thread's last error until cudaGetLastError clears it, and PyTorch's next kernel-launch check on that
  thread raises it as its own failure; `elapsed_time` refuses events created without timing or not yet
  completed for the host; page-locking memory while the thread's current device is not the model's opens a
  context (and memory) on that other GPU. Each is reported as a violation.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class Violation(AssertionError):
    pass


class Access:
    __slots__ = ("actor", "epoch", "hi", "lo", "what", "write")

    def __init__(self, lo, hi, write, actor, epoch, what):
        self.lo, self.hi, self.write, self.actor, self.epoch, self.what = lo, hi, write, actor, epoch, what


class Buffer:
    def __init__(self, name: str, kind: str, alloc_actor):
        self.name, self.kind, self.alloc_actor = name, kind, alloc_actor
        self.accesses: list[Access] = []
        self.freed = False


def merge(into: dict, other: dict) -> None:
    for k, v in other.items():
        if into.get(k, 0) < v:
            into[k] = v


class SimStream:
    _ids = itertools.count()

    def __init__(self, sim: SimCuda, name: str | None = None):
        self.sim = sim
        self.actor = name or f"stream{next(SimStream._ids)}"
        sim.clocks.setdefault(self.actor, {self.actor: 0})

    def wait_event(self, event: SimEvent) -> None:
        with self.sim.lock:
            self.sim.launch(self)
            if event.vc is not None:
                merge(self.sim.clocks[self.actor], event.vc)

    def wait_stream(self, other: SimStream) -> None:
        with self.sim.lock:
            self.sim.launch(self)
            self.sim.launch(other)
            merge(self.sim.clocks[self.actor], self.sim.clocks[other.actor])

    def synchronize(self) -> None:
        with self.sim.lock:
            merge(self.sim.thread_clock(), self.sim.clocks[self.actor])

    def __repr__(self):
        return f"SimStream({self.actor})"


class SimEvent:
    def __init__(self, sim: SimCuda, enable_timing: bool = False, blocking: bool = False):
        self.sim, self.vc, self.timing = sim, None, enable_timing

    def record(self, stream: SimStream | None = None) -> None:
        with self.sim.lock:
            stream = stream or self.sim.current_stream(None)
            self.sim.launch(stream)
            self.vc = dict(self.sim.clocks[stream.actor])

    def wait(self, stream: SimStream | None = None) -> None:
        (stream or self.sim.current_stream(None)).wait_event(self)

    def synchronize(self) -> None:
        with self.sim.lock:
            if self.vc is not None:
                merge(self.sim.thread_clock(), self.vc)

    def _seen_by_host(self) -> bool:
        clock = self.sim.thread_clock()
        return self.vc is not None and all(clock.get(k, 0) >= v for k, v in self.vc.items())

    def query(self) -> bool:
        with self.sim.lock:
            return self._seen_by_host()

    def elapsed_time(self, end: SimEvent) -> float:
        with self.sim.lock:
            if not (self.timing and end.timing):
                # cudaEventElapsedTime: cudaErrorInvalidResourceHandle for events made without timing
                raise Violation("elapsed_time between events created without enable_timing")
            if not (self._seen_by_host() and end._seen_by_host()):
                # cudaEventElapsedTime: cudaErrorNotReady unless both events have completed
                raise Violation("elapsed_time read before the host waited for both events (not ordered)")
        return 0.0


class SimCuda:
    """The simulated device. `violations` collects every ordering error; `check()` raises on any."""

    def __init__(self, fail_alloc_after: int | None = None, refuse_pinning: bool = False, device_index: int = 0,
                 refuse_unpinning: bool = False):
        self.refuse_unpinning = refuse_unpinning  # cudaHostUnregister fails (a driver in a bad state)
        self.device_index = device_index  # the model's GPU; a host thread's current device starts at 0
        self.lock = threading.RLock()
        self.clocks: dict[str, dict] = {}
        self.default = SimStream(self, "compute")
        self._current = threading.local()
        self.buffers: dict[int, Buffer] = {}  # storage base pointer → buffer
        self.violations: list[str] = []
        self.pinned_live = 0
        self.pinned_peak = 0
        self.fail_alloc_after = fail_alloc_after
        self.refuse_pinning = refuse_pinning  # a system that will not lock any more memory
        self.allocs = 0
        self.Stream = lambda device=None: SimStream(self)
        self.Event = lambda enable_timing=False, blocking=False: SimEvent(self, enable_timing, blocking)

    # -- clocks ----------------------------------------------------------------------------------
    def thread_clock(self) -> dict:
        actor = f"thread{threading.get_ident()}"
        return self.clocks.setdefault(actor, {actor: 0})

    def thread_actor(self) -> str:
        self.thread_clock()
        return f"thread{threading.get_ident()}"

    def launch(self, stream: SimStream) -> int:
        """The calling host thread enqueues an operation on `stream`: it follows what the thread did."""
        self.launch_check()
        clock = self.clocks[stream.actor]
        merge(clock, self.thread_clock())
        clock[stream.actor] += 1
        return clock[stream.actor]

    def host_op(self) -> int:
        clock = self.thread_clock()
        actor = self.thread_actor()
        clock[actor] += 1
        return clock[actor]

    def launch_check(self) -> None:
        """PyTorch checks cudaGetLastError after every launch: a latched error surfaces there."""
        latched = getattr(self._current, "latched", None)
        if latched:
            self._current.latched = None
            raise Violation(f"a CUDA error latched earlier on this thread ({latched}) surfaced at an unrelated "
                            "kernel launch: whoever caused it did not clear it (cudaGetLastError)")

    def current_device(self) -> int:
        return getattr(self._current, "device", 0)

    # -- accesses --------------------------------------------------------------------------------
    def _buffer_of(self, t: torch.Tensor):
        buf = self.buffers.get(t.untyped_storage().data_ptr())
        if buf is None:
            return None, 0, 0
        esize = t.element_size()
        lo = t.storage_offset() * esize
        span = 1 + sum((s - 1) * st for s, st in zip(t.shape, t.stride())) if t.numel() else 0
        return buf, lo, lo + span * esize

    def access(self, t: torch.Tensor, write: bool, actor: str, clock: dict, epoch: int, what: str) -> None:
        buf, lo, hi = self._buffer_of(t)
        if buf is None or hi <= lo:
            return
        if buf.freed:
            self.violations.append(f"{what}: {buf.name} used after it was freed")
        for a in buf.accesses:
            if a.hi <= lo or a.lo >= hi or a.actor == actor or not (write or a.write):
                continue
            if clock.get(a.actor, 0) < a.epoch:
                kind = ("write after write" if a.write else "write after read") if write else "read before the write"
                self.violations.append(f"{kind} on {buf.name}[{lo}:{hi}]: {what} by {actor} is not ordered "
                                       f"after {a.what} by {a.actor}")
        if write:
            buf.accesses = [a for a in buf.accesses if not (a.lo >= lo and a.hi <= hi)]
        else:
            buf.accesses = [a for a in buf.accesses if not (a.actor == actor and not a.write and a.lo == lo and a.hi == hi)]
        buf.accesses.append(Access(lo, hi, write, actor, epoch, what))

    def _check_free(self, buf: Buffer, clock: dict, how: str) -> None:
        for a in buf.accesses:
            if a.actor != buf.alloc_actor and clock.get(a.actor, 0) < a.epoch:
                self.violations.append(f"{buf.name} {how} while {a.actor} may still use it ({a.what})")
        buf.freed = True

    # -- the face of offload.backend.TorchCuda ------------------------------------------------------
    def current_stream(self, device=None) -> SimStream:
        return getattr(self._current, "stream", None) or self.default

    @contextlib.contextmanager
    def stream(self, stream: SimStream):
        saved = getattr(self._current, "stream", None)
        self._current.stream = stream
        try:
            yield
        finally:
            self._current.stream = saved

    @contextlib.contextmanager
    def device(self, device):
        saved = self.current_device()
        index = torch.device(device).index
        self._current.device = saved if index is None else index
        try:
            yield
        finally:
            self._current.device = saved

    def empty(self, nbytes: int, device) -> torch.Tensor:
        self.launch_check()
        with self.lock:
            self.allocs += 1
            if self.fail_alloc_after is not None and self.allocs > self.fail_alloc_after:
                raise torch.OutOfMemoryError(f"simulated: CUDA out of memory allocating {nbytes} bytes")
            t = torch.empty(nbytes, dtype=torch.uint8)
            stream = self.current_stream()
            merge(self.clocks[stream.actor], self.thread_clock())
            buf = Buffer(f"device buffer #{self.allocs} ({nbytes} B)", "device", stream.actor)
            self.buffers[t.untyped_storage().data_ptr()] = buf
            # memory the allocator hands back may still be read by kernels queued on this stream so far
            buf.accesses.append(Access(0, nbytes, True, stream.actor, self.clocks[stream.actor][stream.actor],
                                       "allocation"))
            key = t.untyped_storage().data_ptr()
            weakref.finalize(t.untyped_storage(), self._freed_device, key)
            return t

    def _freed_device(self, key: int) -> None:
        with self.lock:
            buf = self.buffers.pop(key, None)
            if buf is not None:
                clock = dict(self.clocks[buf.alloc_actor])
                merge(clock, self.thread_clock())
                self._check_free(buf, clock, "was freed (its memory can be handed out again)")

    def copy(self, dst: torch.Tensor, src: torch.Tensor, non_blocking: bool) -> None:
        with self.lock:
            stream = self.current_stream()
            epoch = self.launch(stream)
            clock = self.clocks[stream.actor]
            what = "a copy" if non_blocking else "an upload"
            self.access(src, False, stream.actor, clock, epoch, what + " (its source)")
            self.access(dst, True, stream.actor, clock, epoch, what)
            dst.copy_(src)
            if not non_blocking:
                merge(self.thread_clock(), clock)

    def host_register(self, t: torch.Tensor) -> int:
        if self.current_device() != self.device_index:
            self.violations.append(f"cudaHostRegister with cuda:{self.current_device()} current for a model on "
                                   f"cuda:{self.device_index} (it opens a context and takes memory on that GPU)")
        if self.refuse_pinning:
            self._current.latched = "cudaErrorMemoryAllocation from cudaHostRegister"
            return 2  # cudaErrorMemoryAllocation
        with self.lock:
            key = t.untyped_storage().data_ptr()
            self.buffers[key] = Buffer(f"page-locked buffer ({t.numel()} B)", "pinned", self.thread_actor())
            self.pinned_live += t.numel()
            self.pinned_peak = max(self.pinned_peak, self.pinned_live)
        return 0

    def host_unregister(self, t: torch.Tensor) -> int:
        with self.lock:
            buf = self.buffers.pop(t.untyped_storage().data_ptr(), None)
            if buf is not None:
                self.pinned_live -= t.numel()
                self._check_free(buf, self.thread_clock(), "was unlocked and freed")
        if self.refuse_unpinning:
            self._current.latched = "cudaErrorInvalidValue from cudaHostUnregister"
            return 1
        return 0

    def clear_error(self) -> int:
        latched, self._current.latched = getattr(self._current, "latched", None), None
        return 2 if latched else 0

    def worker(self, device):
        return self.device(device)

    def host_write(self, t: torch.Tensor) -> None:
        with self.lock:
            epoch = self.host_op()
            self.access(t, True, self.thread_actor(), self.thread_clock(), epoch, "a host write")

    def thread_handoff(self, fn):
        with self.lock:
            parent = dict(self.thread_clock())

        def run(*args):
            with self.lock:
                merge(self.thread_clock(), parent)
            result = fn(*args)
            with self.lock:
                return result, dict(self.thread_clock())
        return run

    def thread_join(self, future):
        result, clock = future.result()
        with self.lock:
            merge(self.thread_clock(), clock)
        return result

    def mem_get_info(self, device):
        return (8 << 30, 16 << 30)

    def cached_free(self, device) -> int:
        return 0

    def max_allocated(self, device) -> int:
        return 0

    def max_reserved(self, device) -> int:
        return 0

    def reset_peak(self, device) -> None:
        pass

    # -- the compute thread ------------------------------------------------------------------------
    def compute_reads(self) -> ComputeReads:
        return ComputeReads(self)

    def check(self) -> None:
        if self.violations:
            unique = list(dict.fromkeys(self.violations))
            raise Violation(f"{len(unique)} ordering violation(s):\n" + "\n".join(unique[:12]))


class ComputeReads(TorchDispatchMode):
    """On the compute thread: every op is a kernel enqueued on the current stream (so the stream's clock
    moves on as real work would), and one reading a tracked buffer is a read there."""

    def __init__(self, sim: SimCuda):
        super().__init__()
        self.sim = sim

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        tensors = [t for t in tree_flatten((args, kwargs or {}))[0] if isinstance(t, torch.Tensor)]
        tracked = [t for t in tensors if t.device.type == "cpu" and t.untyped_storage().data_ptr() in self.sim.buffers]
        with self.sim.lock:
            stream = self.sim.current_stream()
            epoch = self.sim.launch(stream)
            clock = self.sim.clocks[stream.actor]
            for t in tracked:
                self.sim.access(t, False, stream.actor, clock, epoch, f"{func} in a block")
        return func(*args, **(kwargs or {}))
