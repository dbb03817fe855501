"""The worker ranks the sampler's `gpus` option starts (rank_workers.py), outside ComfyUI: a worker that fails
stops the run with its own traceback (no hang, no process or group left behind); bad requests are refused
before any process starts."""

import pytest
import torch
import torch.distributed as dist

from hystream.errors import InputError
from hystream.loaders.streamed import StreamOptions
from hystream.pipeline import SampleSettings
from hystream.rank_workers import DiTRun, RankWorkers, SampleJob


def job(path: str) -> SampleJob:
    return SampleJob(DiTRun(path, StreamOptions(), positive=None), latent=torch.zeros(1, 16, 1, 2, 2),
                     settings=SampleSettings())


def test_a_worker_that_fails_stops_the_run_with_its_traceback(tmp_path):
    missing = str(tmp_path / "no_such_dit.safetensors")
    ranks = RankWorkers(2, torch.device("cpu"), job(missing))
    with pytest.raises(RuntimeError, match="worker rank 1 of 2 failed") as failed, ranks:
        pytest.fail("the run must not start")
    assert "no_such_dit.safetensors" in str(failed.value)  # the worker's own error, from its log
    assert all(p.poll() is not None for p in ranks.workers) and not dist.is_initialized()


def test_gpus_beyond_the_visible_ones_are_refused_before_anything_starts(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    ranks = RankWorkers(4, torch.device("cuda"), job("x"))
    with pytest.raises(InputError, match="4 GPUs .*2 visible"):
        ranks.__enter__()
    assert ranks.workers == [] and not dist.is_initialized()


def test_a_budget_one_of_the_gpus_cannot_hold_is_refused_by_name(monkeypatch):
    """GPUs of different memory: a VRAM budget is asked of every rank, so the smallest GPU must hold it; 0 lets
    each rank plan for its own GPU. Checked before any worker starts."""
    from hystream.parallel.devices import GIB, check_gpus

    mixed = [("RTX 4090", 24 * GIB), ("RTX 3060", 12 * GIB), ("RTX 4090", 24 * GIB)]
    with pytest.raises(InputError, match=r"16 GiB on each of 3 GPUs.*GPU 1 \(RTX 3060\) with 12\.0 GiB.*at most 12\.0"):
        check_gpus(3, "cuda", 16.0, gpus=mixed)
    check_gpus(3, "cuda", 12.0, gpus=mixed)
    check_gpus(3, "cuda", 0.0, gpus=mixed)
    check_gpus(2, "cuda", 16.0, gpus=[mixed[0], mixed[2], mixed[1]])  # the small one is not a rank's
    check_gpus(3, "cpu", 16.0, gpus=[])  # CPU ranks: nothing to check

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda r: mixed[r][0])
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda r: type("P", (), {"total_memory": mixed[r][1]}))
    budget = SampleJob(DiTRun("x", StreamOptions(vram_budget_gb=16.0), positive=None), torch.zeros(1, 16, 1, 2, 2),
                       SampleSettings())
    ranks = RankWorkers(3, torch.device("cuda"), budget)
    with pytest.raises(InputError, match="GPU 1 \\(RTX 3060\\)"):
        ranks.__enter__()
    assert ranks.workers == [] and not dist.is_initialized()


def test_a_start_that_failed_half_way_does_not_spoil_the_next_run(tmp_path):
    """torch counts a group whose start failed; its next group would be named apart from the fresh workers' and
    would wait for them until its timeout. close_group (called on every failed start) resets the count."""
    import datetime

    import tiny_dit
    from hystream.parallel.group import GroupSettings, close_group

    with pytest.raises(RuntimeError):  # a peer that never comes: the start fails in the group's connection
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=2,
                                timeout=datetime.timedelta(seconds=1))
    close_group()
    dit = tiny_dit.save_layout(tiny_dit.tencent_state_dict(tiny_dit.TINY), "comfy", str(tmp_path), tiny_dit.TINY)[0]
    ranks = RankWorkers(2, torch.device("cpu"), job(dit), GroupSettings(timeout_s=20))
    with pytest.raises(ZeroDivisionError), ranks as group:  # the group forms (a stale name: a 20 s timeout)
        assert group.world == 2 and dist.is_initialized()
        raise ZeroDivisionError  # leave at once: the worker is stopped with the run
    assert not dist.is_initialized() and all(p.poll() is not None for p in ranks.workers)
