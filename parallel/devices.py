"""Which device each rank runs on, and what this machine's GPUs cannot give N ranks (refused before any rank
starts): one GPU per rank, rank r on GPU r."""

from __future__ import annotations

import torch

from ..errors import InputError

GIB = 1024 ** 3


def rank_device(device, local_rank: int) -> torch.device:
    """Rank r's device: GPU r of this machine for CUDA (one GPU per rank), the same device otherwise (CPU ranks)."""
    device = torch.device(device)
    return torch.device("cuda", local_rank) if device.type == "cuda" else device


def check_gpus(world: int, device, budget_gb: float | None = None, what: str = "the gpus option",
               gpus: list[tuple[str, int]] | None = None) -> None:
    """Refuse `world` CUDA ranks where there are fewer GPUs, or where a VRAM budget (GiB for the stage, asked of
    every rank: each streams the same blocks) exceeds a rank's GPU. gpus: this machine's (name, total bytes),
    read from torch.cuda unless given."""
    if torch.device(device).type != "cuda" or world <= 1:
        return
    count = torch.cuda.device_count() if gpus is None else len(gpus)
    if count < world:
        raise InputError(f"{world} GPUs ({what})", f"{count} visible", f"set it to at most {count}")
    if not budget_gb:  # automatic: each rank plans for its own GPU's free memory
        return
    if gpus is None:
        gpus = [(torch.cuda.get_device_name(r), torch.cuda.get_device_properties(r).total_memory) for r in range(world)]
    small = [(total, r, name) for r, (name, total) in enumerate(gpus[:world]) if total < budget_gb * GIB]
    if small:
        total, r, name = min(small)
        raise InputError(f"a VRAM budget every rank's GPU can hold ({budget_gb:g} GiB on each of {world} GPUs)",
                         f"GPU {r} ({name}) with {total / GIB:.1f} GiB",
                         f"lower the budget to at most {total / GIB:.1f} GiB, or set 0 (automatic: each GPU plans "
                         "for its own memory)")
