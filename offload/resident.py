"""Which blocks stay on the device between runs, and how deep the stream prefetches: as set, or as a
budget plans them (budget.py) for each run.

A resident block has its own device buffer and stays bound to it; the stream skips it. Its page-locked
host copy is released (a block that streams again later is read from the file into a fresh arena), so a
fully resident model locks nothing."""

from __future__ import annotations

import torch

from ..errors import BudgetError, format_bytes
from .backend import OOM_ERRORS
from .budget import Budget, Plan
from .settings import StreamSettings


class Residency:
    def __init__(self, skeletons, settings: StreamSettings, *, backend, store, ledger, stats):
        self.skeletons, self.backend, self.store, self.ledger, self.stats = skeletons, backend, store, ledger, stats
        self.what = settings.what
        self.sizes = [lay.nbytes for lay in skeletons.layouts]
        self.budget = Budget(settings, backend, self.sizes)
        self.prefetch = max(0, int(settings.prefetch))  # a budget's plan may lower it
        self.plan: Plan | None = None  # the last plan a budget made
        self._buffers: dict[int, torch.Tensor] = {}

    def __contains__(self, index: int) -> bool:
        return index in self._buffers

    def __len__(self) -> int:
        return len(self._buffers)

    def indices(self) -> set[int]:
        return set(self._buffers)

    def streamed(self) -> list[int]:
        """The blocks that stream, in run order."""
        return [i for i in range(len(self.sizes)) if i not in self._buffers]

    def set(self, indices) -> None:
        """Keep exactly these blocks on the device: the others are unbound and their buffers freed."""
        wanted = set(indices)
        for i in list(self._buffers):
            if i not in wanted:
                self.skeletons.unbind(i)
                del self._buffers[i]
        for i in sorted(wanted - set(self._buffers)):
            self._buffers[i] = buf = self._load(i)
            self.skeletons.bind(i, buf)
        self.store.drop(self._buffers)  # resident blocks need no page-locked copy
        streamed = len(self.sizes) - len(self._buffers)
        self.stats.blocks_resident, self.stats.blocks_streamed = len(self._buffers), streamed
        self.stats.ring_slots = min(self.prefetch + 1, streamed)

    def apply_budget(self, activation_bytes: int) -> Plan | None:
        """Resident blocks and prefetch depth for the budget and these activations (None: no budget, or
        an automatic one on the CPU, where every block streams)."""
        if self.budget.budget_bytes is None:
            return None
        plan = self.budget.plan(activation_bytes, sum(b.numel() for b in self._buffers.values()))
        if plan is None:
            self.set(())
            return None
        self.budget.make_room(plan.total_bytes, release=lambda: self.set(()))
        self.prefetch = plan.prefetch
        self.set(plan.resident)
        self.plan = plan
        return plan

    def _load(self, i: int) -> torch.Tensor:
        n = self.sizes[i]
        try:
            buf = self.ledger.alloc(n)
        except OOM_ERRORS as e:
            raise BudgetError(
                f"{format_bytes(n)} on {self.backend.device} for block {i} of {self.what}, kept resident",
                f"out of memory with {len(self._buffers)} blocks resident ({str(e).splitlines()[0][:200]})",
                "lower vram_budget_gb (0 = automatic) so fewer blocks stay resident, or free memory held by "
                "other programs") from None
        self.backend.load_resident(buf, self.store, i)
        return buf
