"""Page-locked bounce buffers for the mapped tier on a GPU: a block read from the file lands in one, then
copies asynchronously to its ring slot. One buffer per ring slot, made on first use and kept across
sessions (locking and unlocking ~a block's worth of RAM per prompt or per forward costs more than
keeping it); released when the model is dropped, or after a session that failed.

Order: the host refills a buffer only after the copy out of it finished (a host wait on that copy's
event, in the worker thread that refills it).
"""

from __future__ import annotations

import logging

import torch

from ..errors import format_bytes

log = logging.getLogger("hystream")


class StagingRing:
    def __init__(self, backend):
        self.backend = backend
        self._buffers: list = []  # PinnedBuffer, or an ordinary tensor when locking was refused
        self._events: list = []  # the copy out of each buffer (None: never copied from)

    def take(self, slot: int, nbytes: int, size: int, what: str) -> tuple[torch.Tensor, bool]:
        """(slot's buffer cut to `nbytes`, whether it is pageable memory), safe to write: the previous
        copy out of it has finished. `size`: what the buffer must hold (the largest streamed block);
        `what`: the model, named in the warning when no memory can be locked."""
        while len(self._buffers) <= slot:
            self._buffers.append(None)
            self._events.append(None)
        if self._events[slot] is not None:
            self._events[slot].synchronize()  # the previous copy out of it is done (this worker waits)
        buf = self._buffers[slot]
        if buf is None or _size(buf) < size:
            if hasattr(buf, "release"):
                buf.release()
            pinned = self.backend.alloc_pinned(size)
            if pinned is None:
                log.warning("HyStream: the system refused to page-lock %s for staging; %s streams with "
                            "synchronous copies (slower)", format_bytes(size), what)
            buf = self._buffers[slot] = pinned if pinned is not None else torch.empty(size, dtype=torch.uint8)
        return (buf.tensor[:nbytes], False) if hasattr(buf, "tensor") else (buf[:nbytes], True)

    def copied(self, slot: int, event) -> None:
        """The copy out of `slot`'s buffer was issued; `event` completes when it has read the buffer."""
        if slot < len(self._events):
            self._events[slot] = event

    def host_tensors(self) -> list[torch.Tensor]:
        return [b.tensor if hasattr(b, "tensor") else b for b in self._buffers if b is not None]

    def release(self) -> None:
        """Unlock and free every buffer. The caller has synchronised with every copy out of them."""
        for buf in self._buffers:
            if hasattr(buf, "release"):
                buf.release()
        self._buffers, self._events = [], []


def _size(buf) -> int:
    return buf.nbytes if hasattr(buf, "nbytes") else buf.numel()
