"""What a streamer is built from (`StreamSettings`, fixed for its life) and what a run hands it
(`RunHooks`). Nothing is patched onto a streamer after construction: what legitimately changes has a
method (`set_budget`, `set_resident`, `fixed_placed`) or is an argument of the run (`session`, `run_hooks`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class HostHandOver:
    """A host that shares the device (ComfyUI): its view of the memory a stage may plan with (free, plus
    what it can evict, less its user's reserve; None on the CPU), and a way to have it free `n` bytes
    right before we allocate them (None: nothing to ask), and what its user asked of the device's memory.
    Without one, the backend's own free memory is used as it is."""

    free_bytes: Callable[[], int | None]
    make_room: Callable[[int], None] | None = None
    keep_resident: bool = True  # False: its user wants no weights left on the device (--novram): all blocks stream
    cap_budget: bool = False  # True: a budget set by hand never exceeds what it can hand over (--lowvram)


@dataclass(frozen=True)
class StreamSettings:
    prefetch: int = 1  # blocks copied ahead of the compute: a ring of prefetch + 1 device slots
    resident: tuple[int, ...] = ()  # blocks kept on the device (with no budget; a budget replans them)
    host_tier: str = "mapped"  # "mapped" | "pinned": where streamed blocks wait (host_store.py)
    budget_bytes: int | None = None  # None: residency as given; 0: automatic (free memory); else bytes
    reserve_bytes: int = 0  # device memory an automatic budget leaves to other programs (no hand-over)
    ram_reserve: int = 0  # RAM the host may still page-lock for itself: never ours to lock
    fixed_bytes: int = 0  # device bytes the stage holds outside the blocks (the non-block weights)
    what: str = "the model"  # the model, as errors name it
    hand_over: HostHandOver | None = None  # a host sharing the device; None: the device is ours
    # the activations of a bare forward (no session), from its inputs; None: not counted
    activation_estimate: Callable[[tuple, dict], int] | None = None


DEFAULT_SETTINGS = StreamSettings()  # the default argument (frozen: one instance serves every call)


@dataclass(frozen=True)
class RunHooks:
    """Per run: `interrupt()` raises to abort between blocks (Cancel); `on_block(i)` reports progress."""

    interrupt: Callable[[], None] | None = None
    on_block: Callable[[int], None] | None = None
