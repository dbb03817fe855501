"""The DiT streamed from its file is bit-identical to the resident DiT, whatever the prefetch depth,
the budget (none, some or all blocks resident) and the stored weight dtype (bf16, fp8)."""

import dataclasses

import pytest
import torch

from hystream.errors import BudgetError
from hystream.loading import load_dit
from hystream.models.token_refiner import RefinerBlock
from tiny_dit import TINY, dit_inputs, save_layout, tencent_state_dict

GIB = 1024 ** 3
DEEPER = dataclasses.replace(TINY, depth_single=6)  # room for "some resident" at prefetch 2
# what the streamer streams (offload/units.py): the refiner's 2 blocks matrix by matrix, 2 double blocks as their 4
# parts each (models/parts.py), 6 single blocks whole
N_UNITS = 2 * len(RefinerBlock.CALL_ORDER) + 2 * 4 + 6


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    sd = tencent_state_dict(DEEPER)
    bf16 = {k: v.to(torch.bfloat16) for k, v in sd.items()}
    return {
        "bf16": save_layout(bf16, "comfy", str(tmp_path_factory.mktemp("bf16")), DEEPER)[0],
        "fp8_scaled": save_layout(sd, "fp8_scaled", str(tmp_path_factory.mktemp("fp8s")), DEEPER)[0],
    }


def run(path, inputs, **kw):
    dit = load_dit(path, **kw)
    try:
        with torch.no_grad():
            out = dit(**inputs)
        return out, dit.streamer.resident_blocks(), dit.stats.as_dict()
    finally:
        dit.close()


def budget_for(path, inputs, resident_blocks, prefetch, weight_dtype):
    """A budget that holds the fixed parts, the ring, the activations and exactly `resident_blocks`
    of the largest blocks (the planner keeps the largest first)."""
    dit = load_dit(path, weight_dtype=weight_dtype)
    try:
        s = dit.streamer
        sizes = sorted((s.block_bytes(i) for i in range(s.block_count())), reverse=True)
        act = dit.model.activation_bytes(tuple(inputs["x"].shape), inputs["txt"].shape[1])
        streamed = sizes[resident_blocks:]
        ring = min(prefetch + 1, len(streamed)) * max(streamed, default=0)
        return (s.fixed_bytes() + sum(sizes[:resident_blocks]) + ring + act) / GIB
    finally:
        dit.close()


@pytest.mark.parametrize("weights,weight_dtype", [("bf16", "auto"), ("bf16", "fp8_e4m3fn"), ("fp8_scaled", "auto")])
@pytest.mark.parametrize("prefetch", [1, 2])
@pytest.mark.parametrize("resident_count", [0, 2, N_UNITS])
def test_streamed_bit_identical_to_resident(files, weights, weight_dtype, prefetch, resident_count):
    path = files[weights]
    inputs = dit_inputs(1, valid=(8,))
    want, _, _ = run(path, inputs, weight_dtype=weight_dtype, resident_blocks="all")
    budget = budget_for(path, inputs, resident_count, prefetch, weight_dtype)
    got, resident, stats = run(path, inputs, weight_dtype=weight_dtype, prefetch_blocks=prefetch, vram_budget_gb=budget)
    # at least those; more where keeping the largest units resident shrinks the ring enough to pay for them
    # (the fp8 file's fp32 refiner blocks are larger than the double blocks' fp8 parts)
    assert resident_count <= len(resident) <= resident_count + 4
    assert stats["copies"] == N_UNITS - len(resident)
    assert torch.equal(got, want)


def test_streamed_batch2_bit_identical(files):
    inputs = dit_inputs(2, valid=(8, 5))
    want, _, _ = run(files["bf16"], inputs, resident_blocks="all")
    got, _, stats = run(files["bf16"], inputs, prefetch_blocks=2)
    assert torch.equal(got, want) and stats["copies"] == N_UNITS


def test_sampling_session_keeps_ring_across_steps(files):
    """A sampling loop holds one session: copies continue from step to step, outputs stay exact."""
    inputs = dit_inputs(1)
    dit = load_dit(files["bf16"], prefetch_blocks=2)
    ref = load_dit(files["bf16"], resident_blocks="all")
    try:
        with torch.no_grad():
            want = [ref(**dict(inputs, timestep=torch.tensor([t]))) for t in (900.0, 500.0, 100.0)]
            with dit.streamer.session():
                got = [dit(**dict(inputs, timestep=torch.tensor([t]))) for t in (900.0, 500.0, 100.0)]
        assert all(torch.equal(a, b) for a, b in zip(got, want))
        # and at most the first two blocks of a fourth step, prefetched (the ones not yet started when the
        # session closes are cancelled)
        assert 3 * N_UNITS <= dit.stats.copies <= 3 * N_UNITS + 2
        assert dit.streamer.live_buffers() == []
    finally:
        dit.close()
        ref.close()


def test_impossible_budget_says_how_much_is_needed(files):
    dit = load_dit(files["bf16"], vram_budget_gb=0.001)
    try:
        with pytest.raises(BudgetError) as info, torch.no_grad():
            dit(**dit_inputs(1))
        msg = str(info.value)
        assert "at least" in msg and "for the DiT" in msg and "a budget of 0.00 GiB" in msg
        assert dit.streamer.live_buffers() == []
    finally:
        dit.close()


def test_a_converting_mapped_tier_converts_each_block_once(files, monkeypatch):
    """weight_dtype fp8 on a bf16 file in the mapped tier: each block is converted once and kept (while RAM
    allows), not re-quantised on the CPU for every copy of every step; the output is unchanged."""
    from hystream.loaders import recipes

    calls = []
    original = recipes.to_store_dtype
    monkeypatch.setattr(recipes, "to_store_dtype", lambda t, d: (calls.append(1), original(t, d))[1])
    inputs = dit_inputs(1)
    dit = load_dit(files["bf16"], weight_dtype="fp8_e4m3fn", prefetch_blocks=1)
    ref = load_dit(files["bf16"], weight_dtype="fp8_e4m3fn", resident_blocks="all")
    try:
        with torch.no_grad(), dit.streamer.session():
            calls.clear()
            outs = [dit(**inputs)]
            first = len(calls)
            outs += [dit(**inputs) for _ in range(2)]
        with torch.no_grad():
            want = ref(**inputs)
        assert all(torch.equal(o, want) for o in outs)
        assert dit.stats.copies >= 3 * N_UNITS
        assert first > 0 and len(calls) == first  # steps 2 and 3 converted nothing again
    finally:
        dit.close()
        ref.close()
