"""The few device operations the streamer needs, behind one object.

The streamer (streamer.py, ring.py) is written once against this seam: streams, events, an asynchronous
copy, device and page-locked allocations, and the few steps where a host "device" and a GPU differ
(bringing a block into its ring slot, loading a resident block, where streamed blocks wait, who counts
allocations). Ordering calls (`wait_event`, `wait_stream`, `record`, `synchronize`) are made on the
stream and event objects a backend hands out:

- `CudaBackend` hands out CUDA's. Everything it does goes through a `cuda` face — `TorchCuda`
  (cuda_face.py), a thin face of torch.cuda, by default — so a test can put a simulated CUDA there and run
  this very code, with CUDA's asynchronous semantics checked on the CPU (tests/stream_check.py).
- `CpuBackend` runs on the host: there a "device" buffer is host memory, copies are done when issued
  (by the worker thread that reads the file), and its streams and events are ordering no-ops.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from .cuda_face import TorchCuda
from .host_buffer import PinnedBuffer

OOM_ERRORS = (torch.OutOfMemoryError, MemoryError)


class NullEvent:
    """An event that is complete when recorded: the host path's copies finish before they return."""

    def record(self, stream=None) -> None:
        pass

    def synchronize(self) -> None:
        pass

    def query(self) -> bool:
        return True

    def elapsed_time(self, other) -> float:
        return 0.0


class NullStream:
    def wait_event(self, event) -> None:
        pass

    def wait_stream(self, stream) -> None:
        pass


class CpuBackend:
    """The compute device is the host: buffers are host memory, copies complete when issued."""

    def __init__(self, device="cpu"):
        self.device = torch.device(device)
        self._stream = NullStream()

    def current_stream(self):
        return self._stream

    def new_stream(self):
        return self._stream

    def event(self, timing: bool = False, blocking: bool = False):
        return NullEvent()

    def on(self, stream):
        return contextlib.nullcontext()

    def context(self):
        return contextlib.nullcontext()

    def worker(self):
        return contextlib.nullcontext()

    def alloc(self, nbytes: int) -> torch.Tensor:
        return torch.empty(nbytes, dtype=torch.uint8, device=self.device)

    def alloc_pinned(self, nbytes: int) -> PinnedBuffer | None:
        return None  # nothing to page-lock without a device to copy to

    def store_tier(self, requested: str) -> str:
        return "mapped"  # resident and held blocks are both RAM here: the page cache keeps hot pages

    def account_allocation(self, ledger, buf: torch.Tensor, nbytes: int) -> None:
        ledger.count(buf, nbytes)  # no allocator measures itself here: the ledger keeps the peak

    def load_resident(self, buf: torch.Tensor, store, index: int) -> None:
        store.fill(index, buf)

    def bring(self, dst: torch.Tensor, index: int, store, staging, slot: int, stream, after) -> None:
        """Worker thread: read block `index` from the file straight into its ring slot; done on return."""
        store.fill(index, dst)

    def upload(self, dst: torch.Tensor, src: torch.Tensor) -> None:
        dst.copy_(src)

    def copy(self, dst: torch.Tensor, src: torch.Tensor) -> None:
        dst.copy_(src)

    def host_write(self, buf: torch.Tensor) -> None:
        pass

    def submit(self, executor: ThreadPoolExecutor, fn, *args) -> Future:
        return executor.submit(fn, *args)

    def result(self, future: Future):
        return future.result()

    def free_bytes(self, reserve: int = 0) -> int | None:
        return None  # host memory: not planned as a device budget

    def reset_peak(self) -> None:
        pass

    def peak_bytes(self) -> int | None:
        return None

    def peak_reserved_bytes(self) -> int | None:
        return None


class CudaBackend:
    """A CUDA device through `cuda` (torch.cuda by default)."""

    def __init__(self, device, cuda=None):
        self.cuda = cuda or TorchCuda()
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())

    def current_stream(self):
        return self.cuda.current_stream(self.device)

    def new_stream(self):
        with self.context():
            return self.cuda.Stream(self.device)

    def event(self, timing: bool = False, blocking: bool = False):
        """blocking: a host synchronize() on it sleeps instead of spinning a core."""
        return self.cuda.Event(enable_timing=timing, blocking=blocking)

    def on(self, stream):
        """Make `stream` current (on its device) in the calling thread."""
        return self.cuda.stream(stream)

    def context(self):
        """Work on our device in this thread: never open a context on GPU 0 for a model on cuda:1."""
        return self.cuda.device(self.device)

    def worker(self):
        """The context of the streamer's worker thread (our device, and whatever the cuda face adds)."""
        return self.cuda.worker(self.device)

    def alloc(self, nbytes: int) -> torch.Tensor:
        return self.cuda.empty(nbytes, self.device)

    def alloc_pinned(self, nbytes: int) -> PinnedBuffer | None:
        """Page-locked host memory of exactly `nbytes`, or None when the system refuses (the caller falls
        back to serving from the file)."""
        try:
            with self.context():
                return PinnedBuffer(self.cuda, nbytes)
        except (RuntimeError, *OOM_ERRORS):
            return None

    def store_tier(self, requested: str) -> str:
        return requested

    def account_allocation(self, ledger, buf: torch.Tensor, nbytes: int) -> None:
        pass  # the caching allocator measures itself (max_memory_allocated, per session)

    def load_resident(self, buf: torch.Tensor, store, index: int) -> None:
        """Upload block `index` into its resident buffer from its page-locked copy when one is held (a
        resident block never locks a new one), else from the file through ordinary memory."""
        host = store.held(index)
        if host is None:
            host = torch.empty(buf.numel(), dtype=torch.uint8)
            store.fill(index, host)
        self.upload(buf, host)  # the host waits: set-up time, not the hot path

    def bring(self, dst: torch.Tensor, index: int, store, staging, slot: int, stream, after):
        """Worker thread: copy block `index` into ring slot `slot` (`dst`) on the copy `stream`, once
        `after` (the last compute from that slot) is done; from the block's page-locked copy, or read from
        the file into the slot's staging buffer. Returns the copy's event."""
        src, pageable = store.packed(index), False
        if src is None:  # served from the file through a staging buffer
            buf = staging.take(slot)
            src, pageable = buf.tensor[:dst.numel()], buf.pageable
            self.host_write(src)
            store.fill(index, src)
        with self.on(stream):
            if after is not None:
                stream.wait_event(after)
            if pageable:  # no page-locked memory to be had: a copy the host waits for (slower, correct)
                self.upload(dst, src)
            else:
                self.copy(dst, src)
            event = self.event(timing=True, blocking=True)
            event.record(stream)
        staging.copied(slot, event)
        return event

    def upload(self, dst: torch.Tensor, src: torch.Tensor) -> None:
        """A copy the host waits for (set-up time, not the hot path)."""
        with self.context():
            self.cuda.copy(dst, src, non_blocking=False)

    def copy(self, dst: torch.Tensor, src: torch.Tensor) -> None:
        """An asynchronous copy on the current stream (see `on`)."""
        self.cuda.copy(dst, src, non_blocking=True)

    def host_write(self, buf: torch.Tensor) -> None:
        """The host is about to write `buf` (a page-locked buffer copies may read)."""
        self.cuda.host_write(buf)

    def submit(self, executor: ThreadPoolExecutor, fn, *args) -> Future:
        return executor.submit(self.cuda.thread_handoff(fn), *args)

    def result(self, future: Future):
        return self.cuda.thread_join(future)

    def free_bytes(self, reserve: int = 0) -> int:
        """Free device memory for a stage: what the driver reports plus what PyTorch's cache holds unused,
        minus `reserve` (the host's reserved VRAM)."""
        free, _ = self.cuda.mem_get_info(self.device)
        return max(0, free + self.cuda.cached_free(self.device) - reserve)

    def reset_peak(self) -> None:
        """Peaks are per session: a lifetime peak would report other models' (inside ComfyUI)."""
        self.cuda.reset_peak(self.device)

    def peak_bytes(self) -> int | None:
        return self.cuda.max_allocated(self.device)

    def peak_reserved_bytes(self) -> int | None:
        """What PyTorch's caching allocator held at its peak: allocated plus its cached, fragmented blocks."""
        return self.cuda.max_reserved(self.device)


def backend_for(device) -> CpuBackend | CudaBackend:
    device = torch.device(device)
    return CudaBackend(device) if device.type == "cuda" else CpuBackend(device)
