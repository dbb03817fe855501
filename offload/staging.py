"""Page-locked bounce buffers for the mapped tier on a GPU: a block read from the file lands in one, then
copies asynchronously to its ring slot. One buffer per ring slot, made on first use and kept across
sessions (locking and unlocking ~a block's worth of RAM per prompt or per forward costs more than
keeping it); released when the model is dropped, or after a session that failed.

Order: the host refills a buffer only after the copy out of it finished (a host wait on that copy's
event, in the worker thread that refills it).
"""

from __future__ import annotations

import logging

from ..errors import format_bytes
from .host_buffer import PageableBuffer

log = logging.getLogger("hystream")


class StagingRing:
    def __init__(self, backend, what: str):
        self.backend = backend
        self.what = what  # the model, named in the warning when no memory can be locked
        self.size = 0  # what each buffer must hold: the largest streamed block (set per session)
        self._buffers: list = []  # a HostBuffer (host_buffer.py) per ring slot, or None before first use
        self._events: list = []  # the copy out of each buffer (None: never copied from)

    def fit(self, size: int) -> None:
        """This session streams blocks of up to `size` bytes: smaller buffers are replaced on next use."""
        self.size = size

    def take(self, slot: int):
        """The slot's buffer (a HostBuffer of at least `size` bytes), safe to write: the previous copy out of
        it has finished. Pageable memory when the system refuses to lock more."""
        while len(self._buffers) <= slot:
            self._buffers.append(None)
            self._events.append(None)
        if self._events[slot] is not None:
            self._events[slot].synchronize()  # the previous copy out of it is done (this worker waits)
        buf = self._buffers[slot]
        if buf is None or buf.nbytes < self.size:
            if buf is not None:
                buf.release()
            buf = self.backend.alloc_pinned(self.size)
            if buf is None:
                log.warning("HyStream: the system refused to page-lock %s for staging; %s streams with "
                            "synchronous copies (slower)", format_bytes(self.size), self.what)
                buf = PageableBuffer(self.size)
            self._buffers[slot] = buf
        return buf

    def copied(self, slot: int, event) -> None:
        """The copy out of `slot`'s buffer was issued; `event` completes when it has read the buffer."""
        if slot < len(self._events):
            self._events[slot] = event

    def release(self) -> None:
        """Unlock and free every buffer. The caller has synchronised with every copy out of them."""
        for buf in self._buffers:
            if buf is not None:
                buf.release()
        self._buffers, self._events = [], []
