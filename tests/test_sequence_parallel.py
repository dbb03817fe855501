"""Sequence parallelism on CPU ranks (gloo): the DiT's image tokens shared over 2 and 3 ranks give the one-rank
output, bit for bit where each rank's kernel calls see the same rows (query sets whole, shares of ≥ 16 rows: the
CPU BLAS rounds smaller calls differently), within 1e-5 relative where the lean path's query chunks differ or
ring attention merges partial softmaxes (rank counts the heads do not divide).

Every rank loads the same file through the real loader and streams its blocks; each case covers a class:
text padding with a key mask (true CFG batch 2), a token count the ranks do not divide (padding tokens),
token replace (first tokens modulated apart) across a share boundary, the lean and the plain path, 1.5."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import tiny_dit
import tiny_dit15
import tiny_framepack
from hystream.loading import load_dit
from ranks import run_ranks

TINY_SP = dataclasses.replace(tiny_dit.TINY, hidden=768, heads=6)  # 6 heads: Ulysses over 2 and 3 ranks, ring else
TINY15_SP = dataclasses.replace(tiny_dit15.TINY15, hidden=768, heads=6)


def cases() -> dict[str, tuple[str, dict, dict]]:
    """name → (model, DiT settings, inputs)."""
    one = tiny_dit.dit_inputs(1, TINY_SP, 3, 8, 12)  # 72 tokens: shares of 36 / 24
    cfg_batch = tiny_dit.dit_inputs(2, TINY_SP, 5, 6, 10, valid=(8, 5))  # 75 tokens: padded to 76 / 75
    return {
        "lean": ("1.0", {}, one),
        "plain": ("1.0", {"lean": False}, one),
        "cfg batch, padded shares": ("1.0", {}, cfg_batch),
        "cfg batch, padded shares, plain": ("1.0", {"lean": False}, cfg_batch),
        "token replace across shares": ("1.0", {}, {**cfg_batch, "first_frame_tokens": 30}),
        "1.5": ("1.5", {}, tiny_dit15.dit_inputs(2, TINY15_SP, 3, 8, 12, valid=(8, 6), glyph_valid=(5, 3),
                                                  image=True)),
        "lean chunks": ("1.0", {"chunk_tokens": 16}, one),
        "framepack section": ("framepack", {}, tiny_framepack.section_inputs(2, valid=(7, 4))),  # packed history
    }


HEADS = {"1.0": TINY_SP.heads, "1.5": TINY15_SP.heads, "framepack": tiny_framepack.HEADS}


def forward_all(group, files: dict, names: list[str]) -> dict[str, torch.Tensor]:
    out = {}
    for name in names:
        model, settings, inputs = cases()[name]
        dit = load_dit(files[model])
        try:
            for key, value in settings.items():
                setattr(dit.model, key, value)
            dit.model.spread_over(group)
            out[name] = tiny_framepack.our_forward(dit, inputs) if model == "framepack" else dit(**inputs)
        finally:
            dit.close()
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sp")
    return {"1.0": tiny_dit.save_layout(tiny_dit.tencent_state_dict(TINY_SP), "comfy", str(folder / "v1"), TINY_SP)[0],
            "1.5": tiny_dit15.save_layout(tiny_dit15.tencent_state_dict(TINY15_SP), "comfy", str(folder / "v15"),
                                          TINY15_SP),
            "framepack": tiny_framepack.save_layout(tiny_framepack.reference_model(), "kijai_bf16", str(folder / "fp"))[0]}


@pytest.fixture(scope="module")
def one_rank(files):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the ranks run
    try:
        with torch.inference_mode():
            return forward_all(None, files, list(cases()))
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("world", [2, 3, 4, 5], ids=["ulysses 2", "ulysses 3", "ulysses 2 x ring 2", "ring 5"])
def test_ranks_give_the_one_rank_output(files, one_rank, world, tmp_path):
    """6 heads: 2 and 3 ranks exchange heads (bit for bit); 4 and 5 do not divide them, so ring attention merges
    partial softmaxes (within 1e-5 relative); FramePack's 2 heads go round a ring from 3 ranks on."""
    names = list(cases())
    per_rank = run_ranks(world, forward_all, files, names, folder=str(tmp_path))
    for name in names:
        ring = HEADS[cases()[name][0]] % world != 0
        want = one_rank[name]
        assert torch.isfinite(want).all()
        for rank, got in enumerate(per_rank):
            out = got[name]
            if ring or name == "lean chunks":  # merged softmaxes / other rows per kernel call: rounding differs
                rel = ((out - want).abs().max() / want.abs().max()).item()
                assert rel <= 1e-5, f"{name}, rank {rank} of {world}: {rel:.2e} relative"
            else:
                assert torch.equal(out, want), (f"{name}, rank {rank} of {world}: differs by "
                                                f"{(out - want).abs().max().item():.2e}")


def test_ranks_split_into_head_teams_and_rings():
    """u = gcd(heads, N) consecutive ranks exchange heads; rings join one rank of each team; the report names it."""
    from hystream.parallel.group import EstimateGroup

    for heads, world, way in ((24, 8, "ulysses 8"), (24, 5, "ring 5"), (24, 9, "ulysses 3 × ring 3"),
                              (16, 6, "ulysses 2 × ring 3"), (6, 4, "ulysses 2 × ring 2")):
        shards = EstimateGroup(world).token_split(100, heads)
        assert shards.report()["attention"] == way
        team, ring = EstimateGroup(world).split(heads)
        assert (team.world if team else 1) * ring.world == world


def test_ring_attention_calls_hold_enough_queries_to_hide_the_exchange():
    """Each ring attention call passes every chunk of keys once: the lean path's query chunks are raised to
    RING_QUERY_ROWS (or the whole share) around a ring, and left as they are for Ulysses."""
    from hystream.models.lean import auto_chunk
    from hystream.parallel.group import EstimateGroup
    from hystream.parallel.ring import RING_QUERY_ROWS

    tokens = 33 * 45 * 80  # 720p × 129 frames
    ring = EstimateGroup(5).token_split(tokens, 24)
    assert ring.auto_chunk(256) >= RING_QUERY_ROWS > auto_chunk(ring.share + 256)
    assert EstimateGroup(5).token_split(3000, 24).auto_chunk(256) == 1024  # a share below it: the share, whole
    ulysses = EstimateGroup(4).token_split(tokens, 24)
    assert ulysses.auto_chunk(256) == auto_chunk(ulysses.share + 256)


def test_one_ranks_activations_shrink_with_the_ranks():
    """The estimator runs the forward as rank 0 of N (fake tensors, collectives' shapes and temporaries):
    the full-size model at 480p × 33 needs well under 1/N + one sequence's embedding size per rank."""
    from hystream.families.hunyuan_video.config import DiTConfig
    from hystream.families.hunyuan_video.memory import forward_peak_bytes

    cfg, shape = DiTConfig(), (1, 16, 9, 60, 104)  # 14 040 image tokens
    peak = {n: forward_peak_bytes(cfg, shape, 256, torch.bfloat16, True, None, "cuda", "flash", None, 0, n)
            for n in (1, 2, 4)}
    embedding = 14040 * cfg.hidden * 2  # allowance: the keys' exchange buffers, the text, the conditioning
    assert peak[2] < 0.75 * peak[1] and peak[4] < 0.5 * peak[1], peak
    assert peak[4] <= peak[1] / 4 + embedding, peak


def test_a_rank_embeds_only_its_share_of_the_latent():
    """Without a step cache (which decides on the whole sequence) a rank patches only the latent frames its share
    lies in: at 720p × 129 over 8 ranks one rank's peak stays below the whole sequence's embedding alone."""
    from hystream.families.hunyuan_video.config import DiTConfig
    from hystream.families.hunyuan_video.memory import forward_peak_bytes

    cfg, shape = DiTConfig(), (1, 16, 33, 90, 160)
    whole_embedding = 33 * 45 * 80 * cfg.hidden * 2
    peak = forward_peak_bytes(cfg, shape, 256, torch.bfloat16, True, None, "cuda", "flash", None, 0, 8)
    assert peak < 0.75 * whole_embedding, (peak / 2**30, whole_embedding / 2**30)
