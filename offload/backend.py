"""The few device operations the streamer needs, behind one object.

The streamer (streamer.py) is written once against this seam: streams, events, an asynchronous copy,
device and page-locked allocations. Its ordering calls (`wait_event`, `wait_stream`, `record`,
`synchronize`) are made on the stream and event objects a backend hands out:

- `CudaBackend` hands out CUDA's. Everything it does goes through a `cuda` namespace — `TorchCuda`, a thin
  face of torch.cuda, by default — so a test can put a simulated CUDA there and run this very code, with
  CUDA's asynchronous semantics checked on the CPU (tests/stream_check.py).
- `CpuBackend` runs on the host: there a "device" buffer is host memory, copies are done when issued
  (by the worker thread that reads the file), and its streams and events are ordering no-ops.

Page-locked memory is allocated at its exact size and registered with the driver (cudaHostRegister),
not taken from PyTorch's pinned pool, which rounds every block up to a power of two (23.7 GiB of bf16
blocks would lock ~40 GiB) and keeps freed blocks locked until emptied.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from concurrent.futures import Future, ThreadPoolExecutor

import torch

PAGE = 4096
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


class TorchCuda:
    """torch.cuda as the streamer uses it (tests substitute a simulated CUDA with the same face)."""

    def __init__(self):
        self.Stream, self.Event = torch.cuda.Stream, torch.cuda.Event

    def current_stream(self, device):
        return torch.cuda.current_stream(device)

    def stream(self, stream):
        return torch.cuda.stream(stream)

    def device(self, device):
        return torch.cuda.device(device)

    def empty(self, nbytes: int, device) -> torch.Tensor:
        return torch.empty(nbytes, dtype=torch.uint8, device=device)

    def copy(self, dst: torch.Tensor, src: torch.Tensor, non_blocking: bool) -> None:
        dst.copy_(src, non_blocking=non_blocking)

    def host_register(self, t: torch.Tensor) -> int:
        """cudaHostRegister: 0, or the CUDA error code (which CUDA also latches as the thread's last error)."""
        return _code(torch.cuda.cudart().cudaHostRegister(t.data_ptr(), t.numel(), 0))

    def host_unregister(self, t: torch.Tensor) -> int:
        return _code(torch.cuda.cudart().cudaHostUnregister(t.data_ptr()))

    def clear_error(self) -> int:
        """cudaGetLastError: returns and resets the calling thread's last error. A refused cudaHostRegister
        leaves its error there, and PyTorch's next kernel-launch check would raise it as if that kernel
        had failed (a misattributed "out of memory")."""
        return _code(torch.cuda.cudart().cudaGetLastError())

    def mem_get_info(self, device) -> tuple[int, int]:
        return torch.cuda.mem_get_info(device)

    def cached_free(self, device) -> int:
        """Memory PyTorch's caching allocator holds but no tensor uses: free for our purposes."""
        return torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)

    def max_allocated(self, device) -> int:
        return torch.cuda.max_memory_allocated(device)

    def max_reserved(self, device) -> int:
        return torch.cuda.max_memory_reserved(device)

    def reset_peak(self, device) -> None:
        torch.cuda.reset_peak_memory_stats(device)

    # what a simulated CUDA observes; the real one needs nothing here
    def host_write(self, buf: torch.Tensor) -> None:
        pass

    def thread_handoff(self, fn):
        return fn

    def thread_join(self, future: Future):
        return future.result()

    def worker(self, device):
        """The context the streamer's worker thread issues every copy in: our device (a checker may add
        its own, e.g. a sanitizer's dispatch mode, which is per thread)."""
        return torch.cuda.device(device)


def _code(err) -> int:
    return int(getattr(err, "value", err))


class PinnedBuffer:
    """Host memory page-locked at its exact size; unlocked when released or garbage collected."""

    def __init__(self, cuda, nbytes: int):
        raw = torch.empty(nbytes + PAGE, dtype=torch.uint8)
        start = (-raw.data_ptr()) % PAGE  # page-aligned start for the driver
        self.tensor = raw[start:start + nbytes]
        self.nbytes = nbytes
        err = cuda.host_register(self.tensor)
        if err:
            cuda.clear_error()  # or the thread's next kernel launch reports it as its own failure
            self.tensor = None
            raise MemoryError(f"cudaHostRegister of {nbytes / 2 ** 30:.2f} GiB was refused (CUDA error {err})")
        self._finalizer = weakref.finalize(self, _unregister, cuda, self.tensor)

    def release(self) -> None:
        self._finalizer()
        self.tensor = None


def _unregister(cuda, tensor: torch.Tensor) -> None:
    if cuda.host_unregister(tensor):
        cuda.clear_error()  # nothing to do about it here; never let it surface at an unrelated kernel


class CpuBackend:
    """The compute device is the host: buffers are host memory, copies complete when issued."""

    host_is_device = True

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

    host_is_device = False

    def __init__(self, device, cuda=None):
        self.cuda = cuda or TorchCuda()
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self._lock = threading.Lock()

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
