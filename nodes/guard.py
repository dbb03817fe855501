"""One wrapper for every node's function: failures users can cause or meet (a disk error, memory running
out) reach ComfyUI as our errors (what was expected, what was found, what to do), never as a bare
traceback. HyStream errors and the host's Cancel pass through untouched; anything else is a HyStream bug
and is left as it is, so it can be reported and fixed."""

from __future__ import annotations

import functools

import torch

from ..errors import BudgetError, CorruptFileError, HyStreamError
from . import host

OOM_TEXT = ("out of memory", "can't allocate memory", "cannot allocate memory", "not enough memory")


def translated(e: BaseException, what: str) -> HyStreamError | None:
    if isinstance(e, HyStreamError) or host.is_interrupt(e):
        return None
    if isinstance(e, (MemoryError, torch.OutOfMemoryError)) or (
            isinstance(e, RuntimeError) and any(t in str(e).lower() for t in OOM_TEXT)):
        return BudgetError(f"enough memory for {what}", f"{type(e).__name__}: {str(e).splitlines()[0][:300]}",
                           "lower the resolution or frame count, set a smaller vram_budget_gb, use smaller VAE "
                           "tiles, or close other programs (ComfyUI's models are unloaded before each stage)")
    if isinstance(e, OSError):
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        return CorruptFileError(f"a readable file for {what}", f"{e.strerror or e}{where}",
                                "check the disk and the file (copy or download it again)")
    return None


def node_errors(what: str):
    """Decorator for a node's FUNCTION method."""
    def wrap(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except BaseException as e:
                ours = translated(e, what)
                if ours is None:
                    raise
                raise ours from e
        return run
    return wrap
