"""torch.cuda as the streamer uses it: `CudaBackend` reaches CUDA only through this face, so a test can put
a simulated CUDA in its place (tests/stream_check.py) and run the very same code."""

from __future__ import annotations

from concurrent.futures import Future

import torch


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
