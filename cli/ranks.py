"""`torchrun --nproc-per-node N -m hystream generate …`: every rank runs the command, the DiT shares each
forward's image tokens over the ranks (parallel/), rank 0 writes the video and the report."""

from __future__ import annotations

import os
from contextlib import contextmanager

from ..errors import InputError


def this_rank_device(args) -> str:
    """This rank's device: cuda:LOCAL_RANK (one GPU per rank) unless --device says cpu."""
    import torch

    from ..parallel.devices import rank_device

    wanted = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return str(rank_device(wanted, int(os.environ.get("LOCAL_RANK", "0"))))


@contextmanager
def joined_ranks(args):
    """The group of a torchrun launch for `generate` (None when this process runs alone); torn down after."""
    from ..parallel.group import GroupSettings, close_group, launched_ranks, start_group

    if launched_ranks() <= 1:
        yield None
        return
    if getattr(args, "command_name", None) != "generate":
        raise InputError("torchrun only for generate (the DiT's sampling is what ranks share)",
                         f"{launched_ranks()} ranks for {getattr(args, 'command_name', 'this command')}",
                         "run the other commands without torchrun")
    import torch

    from ..parallel.devices import check_gpus

    args.device = this_rank_device(args)
    check_gpus(launched_ranks(), args.device, getattr(args, "vram_budget", None), "torchrun's --nproc-per-node")
    try:
        yield start_group(GroupSettings(), torch.device(args.device))
    finally:
        close_group()
