"""The ranks one sampling run is spread over: a torch.distributed process group (started from torchrun's
environment or by the ComfyUI node's workers) and the few collectives the engine asks of it."""

from __future__ import annotations

import datetime
import math
import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import InputError


@dataclass(frozen=True)
class GroupSettings:
    """backend: "auto" (nccl for CUDA devices, gloo for the CPU), "nccl" or "gloo"; timeout_s: a rank that
    stops answering fails the run after this long instead of hanging it."""
    backend: str = "auto"
    timeout_s: float = 600.0

    def backend_for(self, device: torch.device) -> str:
        backend = self.backend if self.backend != "auto" else ("nccl" if device.type == "cuda" else "gloo")
        available = {"nccl": dist.is_nccl_available, "gloo": dist.is_gloo_available}
        if backend not in available:
            raise InputError("a torch.distributed backend nccl or gloo", repr(backend), "pass nccl (GPUs) or gloo (CPU)")
        if not available[backend]():
            raise InputError(f"the {backend} backend of torch.distributed", "this PyTorch build has none",
                             "install a PyTorch with NCCL for several GPUs (or run on one GPU)")
        if backend == "gloo" and device.type == "cuda":
            raise InputError("a CPU device with the gloo backend", "a CUDA device",
                             "use the nccl backend for GPUs (the default)")
        return backend


class SequenceGroup:
    """This process's place among the ranks (rank, world) and the collectives over `group` (None: the
    default group); timeout_s bounds the subgroups it makes (`split`)."""

    def __init__(self, group=None, timeout_s: float = GroupSettings.timeout_s):
        self.group, self.timeout_s = group, timeout_s
        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)
        self.backend = dist.get_backend(group)
        self._splits: dict[int, tuple] = {}

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def token_split(self, n_tokens: int, heads: int):
        """This rank's share of a forward's n image tokens, for a model with `heads` attention heads
        (parallel/shards.py)."""
        from .shards import TokenShards

        return TokenShards(self, n_tokens, heads)

    def split(self, heads: int) -> tuple[SequenceGroup | None, RingGroup]:
        """The ranks as u = gcd(heads, N) consecutive ranks exchanging heads (Ulysses) in each of N/u teams, and
        rings of N/u ranks (one of each team) passing keys along: this rank's team (None when u is 1) and ring.
        Made once per u; every rank makes every subgroup, in the same order (torch.distributed's rule)."""
        u = math.gcd(heads, self.world)
        if u not in self._splits:
            teams = [[j * u + i for i in range(u)] for j in range(self.world // u)]
            rings = [list(ring) for ring in zip(*teams)]
            mine = {}
            for kind, sets in (("team", teams), ("ring", rings)):
                for members in sets:
                    group = dist.new_group([self._global(m) for m in members],
                                           timeout=datetime.timedelta(seconds=self.timeout_s))
                    if self.rank in members:
                        mine[kind] = group
            team = SequenceGroup(mine["team"], self.timeout_s) if u > 1 else None
            self._splits[u] = (team, RingGroup(mine["ring"]))
        return self._splits[u]

    def send_to_leader(self, t: torch.Tensor) -> None:
        """`t` to rank 0 (a VAE tile this rank decoded)."""
        dist.send(self._on_wire(t.contiguous()), dst=self._global(0), group=self.group)

    def receive_from(self, rank: int, shape: tuple) -> torch.Tensor:
        """Rank 0: the next float32 tensor of `shape` that `rank` sends."""
        t = torch.empty(shape, dtype=torch.float32)
        dist.recv(t, src=self._global(rank), group=self.group)
        return t

    def all_to_all(self, t: torch.Tensor, scatter: int, gather: int) -> torch.Tensor:
        """yunchang's all-to-all of [B, L, H, D]: scatter dim 2 / gather dim 1 hands each rank every token of
        H/N heads; (1, 2) is the way back."""
        return _yunchang_all_to_all()(t.contiguous(), scatter, gather, group=self.group)

    def _global(self, rank: int) -> int:
        """The default group's number of this group's `rank` (what point-to-point calls take)."""
        return dist.get_global_rank(self.group, rank) if self.group is not None else rank

    def _on_wire(self, t: torch.Tensor) -> torch.Tensor:
        return t.cpu() if self.backend == "gloo" else t

    def decide(self, flag: bool, device: torch.device) -> bool:
        """Rank 0's flag, on every rank (a step cache's skip decision: all ranks skip the same steps)."""
        t = self._on_wire(torch.tensor([int(flag)], device=device))
        dist.broadcast(t, src=self._global(0), group=self.group)
        return bool(t.item())

    def gather(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """Every rank's `x` (equal shapes), concatenated along `dim` in rank order."""
        parts = [torch.empty_like(x) for _ in range(self.world)]
        dist.all_gather(parts, x.contiguous(), group=self.group)
        return torch.cat(parts, dim)



class RingGroup:
    """A ring of ranks passing tensors to the next one, through yunchang's RingComm (batched isend / irecv)."""

    def __init__(self, group):
        self.comm = _yunchang("yunchang.ring.utils").RingComm(group)
        self.rank, self.world = self.comm.rank, self.comm.world_size

    def pass_on(self, tensors: list[torch.Tensor], into: list[torch.Tensor]) -> None:
        """Start sending `tensors` (contiguous) to the next rank and receiving the previous rank's into `into`
        (same shapes; they hold them once `arrived()` returns)."""
        for t, buffer in zip(tensors, into):
            self.comm.send_recv(t, buffer)
        self.comm.commit()

    def arrived(self) -> None:
        self.comm.wait()


class EstimateRing(RingGroup):
    """A ring as the estimator sees it: the buffers are the caller's, nothing moves."""

    def __init__(self, world: int):
        self.rank, self.world = 0, world

    def pass_on(self, tensors: list[torch.Tensor], into: list[torch.Tensor]) -> None:
        pass

    def arrived(self) -> None:
        pass


class EstimateGroup(SequenceGroup):
    """N ranks as the memory estimator sees one of them (rank 0): the collectives make tensors of the shapes
    they would return, with the temporaries they allocate, and exchange nothing (fake tensors, no processes)."""

    def __init__(self, world: int):
        self.group, self.rank, self.world, self.backend = None, 0, world, "estimate"

    def split(self, heads: int) -> tuple[SequenceGroup | None, RingGroup]:
        u = math.gcd(heads, self.world)
        return (EstimateGroup(u) if u > 1 else None), EstimateRing(self.world // u)

    def gather(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        shape = list(x.shape)
        shape[dim] *= self.world
        return x.new_empty(shape)

    def all_to_all(self, t: torch.Tensor, scatter: int, gather: int) -> torch.Tensor:
        """yunchang's three buffers: the transposed input, the received one, the result in [B, L, H, D]."""
        staged = t.contiguous().clone()
        received = torch.empty_like(staged)
        shape = list(t.shape)
        shape[scatter] //= self.world
        shape[gather] *= self.world
        out = staged.new_empty(shape)
        del staged, received
        return out


def _yunchang(module: str):
    """A yunchang module (imported on first use: its ring modules' import warns about torch.jit.script)."""
    import importlib

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module(module)


def _yunchang_all_to_all():
    return _yunchang("yunchang.comm.all_to_all").all_to_all_4D


def launched_ranks() -> int:
    """How many ranks torchrun (or our workers) started this process among: WORLD_SIZE, 1 when alone."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def start_group(settings: GroupSettings, device: torch.device) -> SequenceGroup:
    """Join the ranks torchrun started (its RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT environment)."""
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise InputError("torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)",
                         f"{', '.join(missing)} missing",
                         "launch with torchrun --nproc-per-node N -m hystream generate …")
    if not dist.is_initialized():
        dist.init_process_group(settings.backend_for(device), init_method="env://",
                                timeout=datetime.timedelta(seconds=settings.timeout_s))
    return SequenceGroup(timeout_s=settings.timeout_s)


def close_group() -> None:
    """Tear the default group down (always: a leaked group keeps its sockets and threads). After a start that
    failed half-way there is no group, but torch has counted one: its next group would be named "1" where fresh
    workers name theirs "0", and they would never meet. torch resets the count only in destroying a group, so
    it is reset here as torch would have."""
    if dist.is_initialized():
        dist.destroy_process_group()
    else:
        dist.distributed_c10d._world.group_count = 0
