"""PyTorch's CUDA sanitizer (torch.cuda._sanitizer, CSAN) on every thread the streamer uses.

CSAN has two halves: trace callbacks (events, streams, synchronisations, allocations), which are global,
and a TorchDispatchMode that sees kernels and copies, which is per thread. Enabled the usual way it only
watches the main thread, so the copies the streamer's worker thread issues go unseen. Here the worker
thread enters a mode of its own that shares the main mode's event handler, through the backend's
`TorchCuda.worker()` hook. The handler is not thread-safe: its entry points take one lock. Errors are
collected instead of raised, so every scenario runs to the end.

Importing torch.cuda._sanitizer turns CUDA tracing on for the rest of the process (a Python callback per
allocation): build a SanitizerWatch only after the timed sections."""

from __future__ import annotations

import collections
import contextlib
import inspect
import threading

from torch.utils._python_dispatch import TorchDispatchMode

from hystream.offload.backend import TorchCuda


class SanitizerWatch:
    def __init__(self):
        import torch.cuda._sanitizer as csan

        self.csan = csan
        self.handler = csan.cuda_sanitizer.dispatch.event_handler
        self.lock = threading.RLock()
        self.errors: list[str] = []
        self.entries: list[int] = []  # the threads that entered worker()
        self.worker_ops = collections.Counter()
        self._patched: list[tuple[object, str]] = []
        self._guard()
        self.WorkerMode = worker_mode_class(csan, self)

    # -- the shared handler, locked -------------------------------------------------------------------
    def _guard(self) -> None:
        launch = self.handler._handle_kernel_launch

        def collected(*args, **kwargs):
            with self.lock:
                found = launch(*args, **kwargs)
            self.errors.extend(str(e)[:800] for e in found)
            return []  # reported here, not raised in the middle of a scenario
        self._patch(self.handler, "_handle_kernel_launch", collected)
        for part in (self.handler.syncs, self.handler.tensors_accessed):
            for name, method in inspect.getmembers(part, inspect.ismethod):
                if not name.startswith("__"):
                    self._patch(part, name, self._locked(method))

    def _locked(self, method):
        def call(*args, **kwargs):
            with self.lock:
                return method(*args, **kwargs)
        return call

    def _patch(self, obj, name: str, value) -> None:
        setattr(obj, name, value)  # an instance attribute: the class's method stays as it was
        self._patched.append((obj, name))

    def restore(self) -> None:
        for obj, name in reversed(self._patched):
            obj.__dict__.pop(name, None)
        self._patched.clear()

    # -- the two threads ------------------------------------------------------------------------------
    def enable(self) -> None:
        """The main thread's mode (PyTorch's own, as TORCH_CUDA_SANITIZER=1 would enter it)."""
        self.csan.cuda_sanitizer.enable()

    def disable(self) -> None:
        if self.csan.cuda_sanitizer.enabled:
            self.csan.cuda_sanitizer.disable()

    @property
    def worker_copies(self) -> int:
        return self.worker_ops["copy_ to the device"]

    def face(self) -> TorchCuda:
        """torch.cuda as the streamer uses it, whose worker thread runs every copy under a sanitizer mode."""
        watch = self

        class SanitizedCuda(TorchCuda):
            @contextlib.contextmanager
            def worker(self, device):
                watch.entries.append(threading.get_ident())
                with super().worker(device), watch.WorkerMode():
                    yield
        return SanitizedCuda()


def worker_mode_class(csan, watch: SanitizerWatch):
    class WorkerMode(csan.CUDASanitizerDispatchMode):
        """CSAN's dispatch mode for another thread: no handler or callbacks of its own, the main one's."""

        def __init__(self):
            TorchDispatchMode.__init__(self)
            self.event_handler = watch.handler

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func._schema.name
            if name == "aten::copy_" and args and getattr(args[0], "is_cuda", False):
                name = "copy_ to the device"
            watch.worker_ops[name] += 1
            return super().__torch_dispatch__(func, types, args, kwargs)
    return WorkerMode
