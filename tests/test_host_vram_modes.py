"""The user's --lowvram / --novram flags, which ComfyUI keeps in model_management.vram_state: our streamers must
honour them as the host's own loaders do (load_models_gpu: NO_VRAM loads no weights, LOW_VRAM only what is
free). --novram: no block stays resident, under an automatic or a hand-set budget; --lowvram: a hand-set budget
never plans past what the host can hand over. Shown through the host stand-in (the pinned ComfyUI refuses both
flags with --cpu) and through a streamer on the simulated CUDA device."""

import pytest
import torch

from host_standin import GIB, VERSIONS, result
from hystream.offload.settings import HostHandOver
from hystream.sizes import MARGIN_MIN
from test_cuda_defects import finish, run, sim_streamed

AUTO, BY_HAND = "0", str(64 * GIB)


@pytest.mark.parametrize("version", VERSIONS)
def test_normal_mode_keeps_blocks_resident_and_a_hand_set_budget_as_set(version):
    modes = result(version)["vram_modes"]
    for mode in ("NORMAL_VRAM", "None"):  # a host without vram_state behaves as a normal one
        normal = modes[mode]
        assert normal["plans"][AUTO]["resident"] > 0  # the GPU has room: the largest blocks stay
        assert normal["plans"][AUTO]["total"] <= normal["available"]
        assert normal["plans"][BY_HAND]["resident"] == 16  # the user's budget is the user's, past the free memory


@pytest.mark.parametrize("version", VERSIONS)
def test_lowvram_caps_a_hand_set_budget_at_what_the_host_hands_over(version):
    low = result(version)["vram_modes"]["LOW_VRAM"]
    assert low["plans"][BY_HAND]["total"] <= low["available"]
    assert low["plans"][BY_HAND] == low["plans"][AUTO]  # capped to the automatic budget, no further
    assert low["plans"][AUTO]["resident"] > 0


@pytest.mark.parametrize("version", VERSIONS)
def test_novram_keeps_no_block_resident(version):
    no = result(version)["vram_modes"]["NO_VRAM"]
    for plan in no["plans"].values():
        assert plan["resident"] == 0, plan
        assert plan["total"] <= no["available"]
        assert plan["prefetch"] == 1  # the ring the user asked for still streams ahead


@pytest.mark.parametrize("keep_resident", [True, False])
def test_a_streamer_told_no_residents_streams_every_block_and_gives_the_same_output(keep_resident):
    hand = HostHandOver(lambda: 64 * GIB, keep_resident=keep_resident)
    sim, m, s, x, want = sim_streamed(settings={"budget_bytes": 0, "hand_over": hand})
    assert torch.equal(run(sim, m, x), want)
    plan = s.current_plan()
    assert (len(plan.resident) == 0) == (not keep_resident), plan
    finish(sim, s)


def test_lowvram_caps_a_streamers_budget():
    free = [0]
    hand = HostHandOver(lambda: free[0], cap_budget=True)
    sim, m, s, x, want = sim_streamed(settings={"budget_bytes": 64 * GIB, "hand_over": hand})
    block = s.block_bytes(0)
    free[0] = MARGIN_MIN + 3 * block  # after the margin: one resident block and a ring of two
    assert torch.equal(run(sim, m, x), want)
    plan = s.current_plan()
    assert len(plan.resident) == 1 and plan.total_bytes <= 3 * block, plan  # not all six, as 64 GiB would
    finish(sim, s)
