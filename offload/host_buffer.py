"""Host memory a copy to the device reads from, behind one face: `.tensor`, `.nbytes`, `.pageable`
(a copy from it must be synchronous), `.release()`.

Page-locked memory is allocated at its exact size and registered with the driver (cudaHostRegister),
not taken from PyTorch's pinned pool, which rounds every block up to a power of two (23.7 GiB of bf16
blocks would lock ~40 GiB) and keeps freed blocks locked until emptied.
"""

from __future__ import annotations

import weakref

import torch

PAGE = 4096


class PinnedBuffer:
    """Host memory page-locked at its exact size; unlocked when released or garbage collected."""

    pageable = False

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


class PageableBuffer:
    """Ordinary host memory, where the system refused to lock more: copies from it make the host wait."""

    pageable = True

    def __init__(self, nbytes: int):
        self.tensor = torch.empty(nbytes, dtype=torch.uint8)
        self.nbytes = nbytes

    def release(self) -> None:
        self.tensor = None
