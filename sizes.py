"""Byte units, and the margin every automatic device budget keeps (one definition for the engine, the
VAE tiler, the planner and the nodes)."""

from __future__ import annotations

GIB = 1024 ** 3
MIB = 1024 ** 2

# What an automatic budget leaves unplanned: the estimates count tensors, not the allocator's rounding and
# fragmentation, cuBLAS/cuDNN workspaces or a kernel's scratch. max(5 %, 0.5 GiB) until GPU runs measure it.
MARGIN_SHARE = 0.05
MARGIN_MIN = GIB // 2


def budget_margin(budget_bytes: int) -> int:
    """Device bytes an automatic budget of `budget_bytes` keeps free for what the estimates do not count."""
    return max(int(MARGIN_SHARE * budget_bytes), MARGIN_MIN)


def automatic_budget(usable_bytes: int) -> int:
    """The budget a stage plans with when the user left it automatic: what it may use, less the margin."""
    return max(0, usable_bytes - budget_margin(usable_bytes))
