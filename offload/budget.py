"""Which blocks stay resident under a device-memory budget, and how many stream.

The budget covers everything the stage holds on the device: the fixed (non-block) weights, resident
blocks, the ring of streamed-block slots ((prefetch + 1) × the largest streamed block) and the
activations. The largest blocks are kept resident first: that keeps the most bytes off the bus and
shrinks the ring slots to the size of the blocks that still stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..errors import BudgetError

from ..sizes import GIB, automatic_budget, budget_margin  # noqa: F401  (the engine's budgets keep the margin)


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
                   activation_bytes: int = 0, prefetch: int = 1, what: str = "this stage") -> Plan:
    n = len(block_bytes)
    order = sorted(range(n), key=lambda i: -block_bytes[i])  # largest first (stable)
    for p in range(max(0, prefetch), -1, -1):
        best = None
        resident_bytes = 0
        for k in range(n + 1):
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
