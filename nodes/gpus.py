"""The `gpus` input of the nodes that can spread their stage over GPUs, and the worker processes it starts
(rank_workers.py): one place for the input's range and wording, and for "one GPU: no workers"."""

from __future__ import annotations

import contextlib

from .. import rank_workers


def gpus_input(what: str, note: str = "") -> tuple:
    return ("INT", {"default": 1, "min": 1, "max": 8, "tooltip": (
        f"GPUs sharing {what}: this one and gpus - 1 worker processes started for this run and stopped after it{note}. "
        "On a CPU host the workers are CPU processes.")})


def workers(gpus: int, device, job):
    """The workers of a run (a context giving the group), or nothing to start for one GPU."""
    return rank_workers.RankWorkers(gpus, device, job) if gpus > 1 else contextlib.nullcontext()
