"""One host copy of the weights however many ranks share a run: every rank streams its blocks from the same
mapped file (the page cache holds the weights once), so what a rank adds to its own private memory is its ring
and activations, not the model. Measured in fresh CPU rank processes (gloo) with psutil's USS / PSS; a rank
that keeps every block resident (a private copy) shows what a copy per rank would look like."""

from __future__ import annotations

import dataclasses
import os

import psutil
import pytest

import tiny_dit
from hystream.loading import load_dit
from ranks import run_ranks

BIG = dataclasses.replace(tiny_dit.TINY, hidden=768, heads=6, depth_double=4, depth_single=8, mlp_hidden=3072,
                          single_mlp_hidden=3072)  # ~0.5 GB of fp32 weights, 6 heads: 2 and 3 ranks
MIB = 1024 ** 2


def private_growth(group, path: str, resident: bool) -> dict:
    inputs = tiny_dit.dit_inputs(1, BIG, 3, 8, 12)
    me = psutil.Process()
    before = me.memory_full_info()
    dit = load_dit(path, resident_blocks="all" if resident else None)
    try:
        dit.model.spread_over(group)
        dit(**inputs)
        after = me.memory_full_info()
    finally:
        dit.close()
    return {"uss": (after.uss - before.uss) / MIB, "pss": (after.pss - before.pss) / MIB}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tiny_dit.save_layout(tiny_dit.tencent_state_dict(BIG), "comfy", str(tmp_path_factory.mktemp("big")), BIG)[0]
    return path, os.path.getsize(path) / MIB


def test_ranks_share_one_host_copy_of_the_weights(weights, tmp_path):
    path, size = weights
    copy = run_ranks(1, private_growth, path, True, folder=str(tmp_path))[0]
    assert copy["uss"] > 0.9 * size, (copy, size)  # the measurement sees a private copy when there is one
    for world in (2, 3):
        per_rank = run_ranks(world, private_growth, path, False, folder=str(tmp_path))
        for got in per_rank:
            assert got["uss"] < 0.3 * size, (world, per_rank, size)  # ring + activations, not the model
        assert sum(g["pss"] for g in per_rank) < 1.3 * size, (world, per_rank, size)  # the file's pages once
