"""Which blocks stay resident under a device-memory budget, and how many stream.

The budget covers everything the stage holds on the device: the fixed (non-block) weights, resident
blocks, the ring of streamed-block slots ((prefetch + 1) × the largest streamed block) and the
activations. The largest blocks are kept resident first: that keeps the most bytes off the bus and
shrinks the ring slots to the size of the blocks that still stream.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..errors import BudgetError
from ..sizes import GIB, automatic_budget, budget_margin  # noqa: F401  (the engine's budgets keep the margin)
from .settings import StreamSettings


@dataclass(frozen=True)
class Plan:
    resident: frozenset[int]
    prefetch: int
    ring_bytes: int
    total_bytes: int  # fixed + resident + ring + activations

    def describe(self, n_blocks: int) -> str:
        return (f"{len(self.resident)}/{n_blocks} blocks resident, prefetch {self.prefetch}, "
                f"ring {self.ring_bytes / GIB:.2f} GiB, total {self.total_bytes / GIB:.2f} GiB")


def plan_residency(block_bytes: Sequence[int], budget_bytes: int, *, fixed_bytes: int = 0,
                   activation_bytes: int = 0, prefetch: int = 1, what: str = "this stage", min_prefetch: int = 0,
                   max_resident: int | None = None) -> Plan:
    """The most resident blocks (at most `max_resident`) at the deepest prefetch (down to `min_prefetch`)
    that fit the budget."""
    n = len(block_bytes)
    most = n if max_resident is None else min(n, max(0, max_resident))
    order = sorted(range(n), key=lambda i: -block_bytes[i])  # largest first (stable)
    for p in range(max(0, prefetch), min(min_prefetch, prefetch) - 1, -1):
        best = None
        resident_bytes = 0
        for k in range(most + 1):
            if k:
                resident_bytes += block_bytes[order[k - 1]]
            streamed = order[k:]
            ring = min(p + 1, len(streamed)) * max((block_bytes[i] for i in streamed), default=0)
            total = fixed_bytes + resident_bytes + ring + activation_bytes
            if total <= budget_bytes:
                best = Plan(frozenset(order[:k]), p, ring, total)
        if best is not None:
            return best
    need = fixed_bytes + max(block_bytes, default=0) + activation_bytes
    raise BudgetError(
        f"at least {need / GIB:.2f} GiB for {what} (fixed weights {fixed_bytes / GIB:.2f} + one block "
        f"{max(block_bytes, default=0) / GIB:.2f} + activations {activation_bytes / GIB:.2f} GiB)",
        f"a budget of {budget_bytes / GIB:.2f} GiB",
        "raise vram_budget_gb (0 = automatic), or lower the resolution or frame count to shrink the activations")


class Budget:
    """A streamer's budget and the device memory it plans with: `budget_bytes` None (residency as set),
    0 (automatic: the free memory, less the margin) or bytes. Free memory is the host's view where a host
    shares the device (its evictable models included), else the backend's, less `reserve_bytes`."""

    def __init__(self, settings: StreamSettings, backend, block_bytes: Sequence[int]):
        self.budget_bytes = settings.budget_bytes
        self.block_bytes = list(block_bytes)
        self.fixed_bytes, self.prefetch, self.what = settings.fixed_bytes, max(0, int(settings.prefetch)), settings.what
        self.fixed_on_device = False  # the non-block weights are on the device now (their owner says)
        host = settings.hand_over
        self._free: Callable[[], int | None] = host.free_bytes if host else (
            lambda: backend.free_bytes(settings.reserve_bytes))
        self._make_room: Callable[[int], None] | None = host.make_room if host else None
        self.keep_resident = host.keep_resident if host else True
        self.capped = bool(host and host.cap_budget)

    def plan(self, activation_bytes: int, resident_bytes: int) -> Plan | None:
        """Resident blocks and prefetch for a run with these activations; None where an automatic budget has
        no device memory to plan (the CPU: resident and mapped blocks are both RAM there, and the page cache
        already keeps hot pages without growing the process, so every block streams)."""
        budget = self.budget_bytes
        if budget == 0 or self.capped:
            free = self._free()
            if free is None and budget == 0:
                return None
            if free is not None:
                held = resident_bytes + (self.fixed_bytes if self.fixed_on_device else 0)
                usable = automatic_budget(free + held)  # what we hold already counts as usable; less the margin
                budget = usable if budget == 0 else min(budget, usable)
        return plan_residency(self.block_bytes, budget, fixed_bytes=self.fixed_bytes,
                              activation_bytes=activation_bytes, prefetch=self.prefetch, what=self.what,
                              max_resident=None if self.keep_resident else 0)

    def make_room(self, nbytes: int, release: Callable[[], None]) -> None:
        """Before allocating `nbytes`, have a host that shares the device free them; `release` first gives
        back what we hold, so that the host evicts no more than the plan needs. Without a host: nothing."""
        if self._make_room is not None:
            release()
            self._make_room(nbytes)

    def make_room_for_fixed(self) -> None:
        if self._make_room is not None:
            self._make_room(self.fixed_bytes)

    def activation_room(self) -> int | None:
        """Bytes the budget (or the automatic budget of the free memory) leaves for activations once the
        fixed weights and the smallest ring (two of the largest blocks) are counted; None with no figure."""
        free = self._free() if (not self.budget_bytes or self.capped) else None
        usable = None if free is None else automatic_budget(free)
        budget = self.budget_bytes or usable
        if budget is None:
            return None
        budget = min(budget, usable) if (self.capped and usable is not None) else budget
        return budget - self.fixed_bytes - 2 * max(self.block_bytes, default=0)
