"""Run a function on N CPU ranks (gloo, 127.0.0.1 only), each in a fresh spawned process, with a bounded
time and the group always torn down. Each rank's return value comes back through a file."""

from __future__ import annotations

import os
import socket
import traceback

import torch
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, target, args: tuple, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    from hystream.parallel.group import GroupSettings, close_group, start_group

    try:
        group = start_group(GroupSettings(backend="gloo", timeout_s=60), torch.device("cpu"))
        with torch.inference_mode():
            result = target(group, *args)
        torch.save({"ok": result}, out)
    except BaseException:  # noqa: BLE001 - the parent reports it
        torch.save({"error": traceback.format_exc()}, out)
    finally:
        close_group()


def run_ranks(world: int, target, *args, folder: str, timeout: float = 180.0) -> list:
    """[target(group, *args) of rank 0, rank 1, …]; raises with a rank's traceback if one failed."""
    ctx = mp.get_context("spawn")
    port = free_port()
    outs = [os.path.join(folder, f"rank{r}.pt") for r in range(world)]
    procs = [ctx.Process(target=_rank_main, args=(r, world, port, target, args, outs[r]), daemon=True)
             for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout)
    alive = [p for p in procs if p.is_alive()]
    for p in alive:
        p.kill()
        p.join(5)
    if alive:
        raise TimeoutError(f"{len(alive)} of {world} ranks still running after {timeout:.0f} s")
    results = []
    for r, path in enumerate(outs):
        if not os.path.exists(path):
            raise RuntimeError(f"rank {r} exited with {procs[r].exitcode} and no result")
        got = torch.load(path, weights_only=False)
        if "error" in got:
            raise RuntimeError(f"rank {r} failed:\n{got['error']}")
        results.append(got["ok"])
    return results
