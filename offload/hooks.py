"""The streamer's grip on a module: its root forward wrapped, a pre- and post-hook on every block, and
the current run's hooks (interrupt check, progress) called around each block."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Sequence

from torch import nn

from .settings import RunHooks


class ForwardHooks:
    """`open_run(args, kwargs)` before the root's forward (True: it opened a session, which
    `close_run(failed)` then closes), `before(i)` / `after(i)` around each block."""

    def __init__(self, root: nn.Module, blocks: Sequence[nn.Module], *, open_run: Callable[[tuple, dict], bool],
                 close_run: Callable[[bool], None], before: Callable[[int], None], after: Callable[[int], None]):
        self.root = root
        # The root's forward is wrapped (not hooked) so the session also closes on KeyboardInterrupt:
        # PyTorch's always_call forward hooks run for Exception only.
        inner = root.forward

        @functools.wraps(inner)
        def forward(*args, **kwargs):
            opened = open_run(args, kwargs)
            try:
                out = inner(*args, **kwargs)
            except BaseException:
                if opened:
                    close_run(True)
                raise
            if opened:
                close_run(False)
            return out

        root.forward = forward
        self.run = RunHooks()
        self._before, self._after = before, after
        self._handles = []
        for i, block in enumerate(blocks):
            self._handles.append(block.register_forward_pre_hook(lambda m, a, i=i: self._pre(i)))
            self._handles.append(block.register_forward_hook(lambda m, a, o, i=i: self._post(i), always_call=True))

    def _pre(self, i: int) -> None:
        if self.run.interrupt is not None:
            self.run.interrupt()
        self._before(i)

    def _post(self, i: int) -> None:
        self._after(i)
        if self.run.on_block is not None:
            self.run.on_block(i)

    @contextlib.contextmanager
    def using(self, hooks: RunHooks | None):
        """This run's interrupt check and progress for the forwards inside (None: keep the current ones)."""
        if hooks is None:
            yield
            return
        saved, self.run = self.run, hooks
        try:
            yield
        finally:
            self.run = saved

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.root.__dict__.pop("forward", None)
