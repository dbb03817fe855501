"""A stage spread over worker processes this process starts, owns and stops: the `gpus` option of ComfyUI's
sampler and VAE decode nodes (ComfyUI itself is one process). This process is rank 0 — its progress, previews
and Cancel are the stage's — and each worker runs the stage's job on its own device: sampling opens the same
DiT file (the same mapped pages) and shares the image tokens (parallel/), decoding opens the VAE and decodes
its share of the tiles, which rank 0 blends. A worker that fails stops the stage with its log."""

from __future__ import annotations

import dataclasses
import datetime
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace

import torch
import torch.distributed as dist

from . import long_video, pipeline
from .errors import InputError
from .loading import load_dit, load_vae
from .parallel.devices import check_gpus, rank_device
from .parallel.group import GroupSettings, SequenceGroup, close_group
from .vae.tiling import Hooks, TileSpec

# a worker imports this package the way its host did (a custom node's folder name is free) and runs worker_main
BOOT = ("import sys, importlib; sys.argv[1] and sys.path.insert(0, sys.argv[1]); "
        "importlib.import_module(sys.argv[2] + '.rank_workers').worker_main(*sys.argv[3:])")


@dataclass(frozen=True)
class DiTRun:
    """What every worker of a DiT stage needs besides its inputs: the DiT's file and how rank 0 opened it, the
    prompts, the LoRAs and the step cache (all on the host)."""
    dit_path: str
    options: object  # loaders.streamed.StreamOptions, without the host's hand-over and backend
    positive: object
    negative: object = None
    loras: tuple = ()
    step_cache: object = None

    @classmethod
    def of(cls, dit, positive, negative=None, loras=(), step_cache=None) -> DiTRun:
        """The run of rank 0's loaded DiT; the workers read its blocks from the mapped file (the page cache is the
        one host copy they share: pinning would lock a copy per process)."""
        options = dataclasses.replace(dit.options, hand_over=None, backend=None, host_tier="mapped")
        return cls(dit.path, options, positive, negative, tuple(loras), step_cache)

    @contextmanager
    def opened(self, device: str, ready: Callable[[], SequenceGroup]):
        """The DiT open on `device`, spread over the group `ready()` joins once it is open."""
        o = self.options
        dit = load_dit(self.dit_path, device, weight_dtype=o.weight_dtype, prefetch_blocks=o.prefetch,
                       vram_budget_gb=o.vram_budget_gb, resident_blocks=o.resident, host_tier=o.host_tier,
                       compute=o.compute, ram_reserve=o.ram_reserve, reserve_bytes=o.reserve_bytes)
        try:
            dit.model.spread_over(ready())
            yield dit
        finally:
            dit.close()


@dataclass(frozen=True)
class DiTJob:
    """A worker's part of a run of the DiT `run_of` opens."""
    run_of: DiTRun

    @property
    def budget_gb(self) -> float | None:
        """The VRAM budget every rank's GPU must hold (the loader's, GiB; None / 0: each plans its own)."""
        return self.run_of.options.vram_budget_gb


@dataclass(frozen=True)
class SampleJob(DiTJob):
    """A worker's part of a sampling run: every forward's image tokens shared."""
    latent: torch.Tensor
    settings: pipeline.SampleSettings

    def run(self, device: str, ready: Callable[[], SequenceGroup]) -> None:
        """ready(): says this worker is ready and joins the group, once what it opens is open."""
        r = self.run_of
        with r.opened(device, ready) as dit:
            pipeline.sample(dit, r.positive, self.latent, self.settings, negative=r.negative, loras=r.loras,
                            step_cache=r.step_cache)


@dataclass(frozen=True)
class LongVideoJob(DiTJob):
    """A worker's part of a long video (FramePack): every section's forwards shared; rank 0 decodes and writes."""
    start_latent: torch.Tensor
    image_states: torch.Tensor
    settings: object  # sampling.long_video.LongVideoSettings

    def run(self, device: str, ready: Callable[[], SequenceGroup]) -> None:
        r = self.run_of
        with r.opened(device, ready) as dit:
            long_video.sample_long_video(dit, r.positive, r.negative, self.start_latent, self.image_states,
                                         self.settings, None, None, loras=r.loras, step_cache=r.step_cache)


@dataclass(frozen=True)
class DecodeJob:
    """A worker's part of a tiled decode: its share of the tiles (rank 0 resolved them), sent to rank 0."""
    vae_path: str
    latent: torch.Tensor
    spec: TileSpec
    budget_gb = None  # the tiles' size bounds a rank's memory

    def run(self, device: str, ready: Callable[[], SequenceGroup]) -> None:
        vae = load_vae(self.vae_path, device)
        try:
            pipeline.decode(vae, self.latent, self.spec, Hooks(ranks=ready()))
        finally:
            vae.close()


def import_route() -> tuple[str, str]:
    """(folder to put on sys.path, package name) that import this package in a fresh interpreter: its own name
    when that is a module name (an installed package), else its folder's (ComfyUI names a custom node by path)."""
    here = os.path.dirname(os.path.abspath(__file__))
    name = __package__ or ""
    if name and all(part.isidentifier() for part in name.split(".")):
        return "", name
    return os.path.dirname(here), os.path.basename(here)


class RankWorkers:
    """`with RankWorkers(world, device, job) as group:` — rank 0 here, ranks 1… in workers running `job`; on
    leaving, the workers are waited for (or killed, when the stage failed or was cancelled), the group torn down."""

    def __init__(self, world: int, device: torch.device, job, settings: GroupSettings | None = None):
        self.world, self.device, self.job = world, torch.device(device), job
        self.settings = settings or GroupSettings()
        self.workers: list[subprocess.Popen] = []
        self.folder = ""

    def _check(self) -> None:
        if dist.is_initialized():
            raise InputError("no other torch.distributed group in this process", "one already running",
                             "set gpus to 1 (another node or extension runs one)")
        check_gpus(self.world, self.device, self.job.budget_gb)
        self.backend = self.settings.backend_for(self.device)

    def __enter__(self) -> SequenceGroup:
        self._check()
        for attempt in range(2):
            try:
                self._start()
                return SequenceGroup(timeout_s=self.settings.timeout_s)
            except BaseException as e:
                self._stop(kill=True)
                shutil.rmtree(self.folder, ignore_errors=True)
                if attempt or not _unconnected(e):  # gloo's mesh of pair connections can fail on a busy machine:
                    raise                           # once more, afresh; anything else is the run's error
        raise AssertionError("unreachable")

    def _start(self) -> None:
        """The workers started (a fresh folder, job file and store) and joined with this process in a group."""
        self.workers, self.folder = [], tempfile.mkdtemp(prefix="hystream-ranks-")
        job_path = os.path.join(self.folder, "job.pt")
        torch.save(self.job, job_path)
        store = dist.TCPStore("127.0.0.1", 0, self.world, is_master=True, wait_for_workers=False,
                              timeout=datetime.timedelta(seconds=self.settings.timeout_s))
        parent, package = import_route()
        for rank in range(1, self.world):
            with open(os.path.join(self.folder, f"rank{rank}.log"), "w") as log:  # the worker keeps its own copy
                self.workers.append(subprocess.Popen(
                    [sys.executable, "-c", BOOT, parent, package, job_path, __package__ or "", str(rank),
                     str(self.world), str(store.port), str(rank_device(self.device, rank)), self.backend,
                     str(self.settings.timeout_s)],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.folder))  # not the host's
        self._wait_ready(store)
        dist.init_process_group(self.backend, store=store, rank=0, world_size=self.world,
                                timeout=datetime.timedelta(seconds=self.settings.timeout_s))

    def _wait_ready(self, store) -> None:
        """Every worker has opened its DiT (or one died: its log says why)."""
        deadline = time.monotonic() + self.settings.timeout_s
        while not all(store.check([f"ready{r}"]) for r in range(1, self.world)):
            if failed := self._failed_worker():
                raise RuntimeError(failed)
            if time.monotonic() > deadline:
                raise RuntimeError(f"HyStream's worker ranks did not start within {self.settings.timeout_s:.0f} s")
            time.sleep(0.05)

    def _failed_worker(self, wait: float = 0.0) -> str | None:
        """The first worker that exited with an error on its own (waiting up to `wait` s for one), with its log."""
        deadline = time.monotonic() + wait
        while True:
            for rank, proc in enumerate(self.workers, 1):
                if proc.poll() not in (None, 0):
                    return f"HyStream's worker rank {rank} of {self.world} failed:\n{self.log_tail(rank)}"
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    def log_tail(self, rank: int, chars: int = 3000) -> str:
        try:
            with open(os.path.join(self.folder, f"rank{rank}.log")) as f:
                return f.read()[-chars:]
        except OSError:
            return "(no log)"

    def _stop(self, kill: bool) -> None:
        for proc in self.workers:
            if kill and proc.poll() is None:
                proc.kill()
            try:
                proc.wait(timeout=5 if kill else self.settings.timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        close_group()

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            # a collective that broke (RuntimeError) most likely broke because a worker died: find it first
            collective = exc_type is not None and issubclass(exc_type, RuntimeError)
            failed = self._failed_worker(wait=2.0 if collective else 0.0)
            self._stop(kill=exc_type is not None)  # a failed or cancelled run: the workers wait in a collective
            failed = failed or (self._failed_worker() if exc_type is None else None)
            if failed and (exc_type is None or collective):
                raise RuntimeError(failed) from exc
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def _unconnected(e: BaseException) -> bool:
    """Whether starting the group failed in connecting the ranks' sockets (not a worker's error, nor a timeout)."""
    return isinstance(e, dist.DistNetworkError) or (isinstance(e, RuntimeError) and "connectFullMesh" in str(e))


def renaming_pickle(host_package: str):
    """A pickle module for torch.load that finds the host's classes (named under the host's name for this package,
    a path in ComfyUI) under the name this worker imported it by."""
    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            if host_package and __package__ and (module == host_package or module.startswith(host_package + ".")):
                module = __package__ + module[len(host_package):]
            return super().find_class(module, name)

    return SimpleNamespace(Unpickler=Unpickler, load=pickle.load, __name__="pickle")


def worker_main(job_path: str, host_package: str, rank: str, world: str, port: str, device: str, backend: str,
                timeout_s: str) -> None:
    """A worker rank: load its job, open what the job needs, say ready, join the group, do its part, leave."""
    rank, world, timeout = int(rank), int(world), datetime.timedelta(seconds=float(timeout_s))
    job = torch.load(job_path, weights_only=False, pickle_module=renaming_pickle(host_package))
    store = dist.TCPStore("127.0.0.1", int(port), world, is_master=False, timeout=timeout)

    def ready() -> SequenceGroup:
        store.set(f"ready{rank}", "1")
        dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timeout)
        return SequenceGroup(timeout_s=timeout.total_seconds())

    try:
        with torch.inference_mode():
            job.run(device, ready)
    finally:
        close_group()
