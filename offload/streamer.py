"""The block streamer: runs a module whose blocks execute in order with only a ring of blocks on the
compute device, each arriving up to `prefetch` blocks ahead of the compute.

It attaches with forward hooks, so any `nn.Module` list of blocks works (our DiT blocks, transformers'
Llama layers). A worker thread brings each block into its ring slot; per block, the pre-hook makes the
compute wait for that block's copy, binds its parameters to views of the slot and queues the next copy;
the post-hook records "compute done" on the slot and unbinds. Blocks marked resident stay bound to their
own device buffers and are skipped by the stream. Device operations go through a backend (backend.py);
the hooks are hooks.py, a session's ring ring.py, residency resident.py and budget.py, accounting stats.py.

The ordering protocol on a GPU (events only; the compute thread never waits for the host):
- a session's copy stream first waits for the compute stream: fresh ring slots may be memory the
  allocator took back from kernels the compute stream still has queued;
- a copy into a slot waits for the event recorded after the previous block computed from that slot;
- the compute waits for the copy's event before the block runs;
- a page-locked staging buffer (the mapped tier) is refilled by the host only after the copy out of it
  has finished (a host wait on its event, in the worker thread);
- when the session closes, the compute stream waits for the copy stream (ring slots are freed in its
  order) and the host waits for both (staging buffers are freed, stall timings read).
Copies in flight never exceed the ring: with fewer streamed blocks than `prefetch + 1`, the effective
prefetch is the ring size minus one, so a copy never lands in the slot being computed from.

A session holds the ring; it opens with the root module's forward (or explicitly, around a sampling
loop, so the next step's first blocks prefetch during the last blocks of this step) and closes in all
cases — exceptions, Cancel and Ctrl-C included — releasing every ring slot and staging buffer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from .backend import backend_for
from .binding import Skeletons
from .budget import Plan
from .hooks import ForwardHooks
from .host_store import HostStore
from .packing import BlockLayout
from .resident import Residency
from .ring import Ring
from .settings import DEFAULT_SETTINGS, RunHooks, StreamSettings
from .source import BlockSource
from .staging import StagingRing
from .stats import DeviceLedger, StreamStats


class BlockStreamer:
    def __init__(self, root: nn.Module, blocks: Sequence[nn.Module], source: BlockSource,
                 device: torch.device | str, settings: StreamSettings = DEFAULT_SETTINGS, *, backend=None):
        if len(blocks) != len(source):
            raise ValueError(f"{len(blocks)} blocks but the source describes {len(source)}")
        self._settings = settings
        self._backend = backend or backend_for(device)
        self._store = HostStore(source, self._backend.store_tier(settings.host_tier), self._backend,
                                settings.ram_reserve)
        self._skeletons = Skeletons(blocks, [source.layout(i) for i in range(len(blocks))])
        self._sizes = [lay.nbytes for lay in self._skeletons.layouts]
        self._stats = StreamStats(blocks_total=len(blocks))
        self._ledger = DeviceLedger(self._backend, self._stats, settings.fixed_bytes)
        self._residency = Residency(self._skeletons, settings, backend=self._backend, store=self._store,
                                    ledger=self._ledger, stats=self._stats)
        self._staging = StagingRing(self._backend, settings.what)  # mapped tier on a GPU; kept across sessions
        self._ring: Ring | None = None  # the open session
        self._pause_block: int | None = None  # see pause_after
        self.set_resident(settings.resident)
        self._hooks = ForwardHooks(root, blocks, open_run=self._root_forward, before=self._before, after=self._after,
                                   close_run=lambda failed: self._close(implicit=True, failed=failed))

    def detach(self) -> None:
        """Remove the hooks and free everything (resident blocks, the page-locked host store)."""
        self._close(implicit=False, force=True)
        self._staging.release()
        self._hooks.remove()
        self.set_resident(())
        self._store.release()

    def _root_forward(self, args: tuple, kwargs: dict) -> bool:
        self._stats.forwards += 1
        if self._ring is None and self._residency.budget.budget_bytes is not None:
            estimate = self._settings.activation_estimate
            self._residency.apply_budget(estimate(args, kwargs) if estimate else 0)
        return self._open(implicit=True)

    def _before(self, i: int) -> None:
        if self._ring is None:
            raise RuntimeError("a streamed block ran outside its root module's forward; call it through "
                               "the model, or wrap the calls in `with streamer.session():`")
        if i not in self._residency:
            self._ring.enter(i)

    def _after(self, i: int) -> None:
        if self._ring is not None:
            self._ring.leave(i)

    # -- runs ----------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def session(self, activation_bytes: int | None = None, hooks: RunHooks | None = None):
        """Hold the ring across several forwards (a sampling loop): copies never stop between steps.
        With a budget set, residency is planned once here for `activation_bytes`. `hooks`: this run's."""
        with self.run_hooks(hooks):
            if self._ring is None:
                self._residency.apply_budget(activation_bytes or 0)
            opened = self._open(implicit=False)
            try:
                yield self
            except BaseException:
                if opened:
                    self._close(implicit=False, failed=True)
                raise
            if opened:
                self._close(implicit=False)

    def run_hooks(self, hooks: RunHooks | None):
        """A context: interrupt check and progress for the forwards inside (None: keep the current ones)."""
        return self._hooks.using(hooks)

    def _open(self, implicit: bool) -> bool:
        if self._ring is not None:
            return False
        ring = Ring(self._residency.streamed(), self._residency.prefetch, implicit, self._pause_block,
                    sizes=self._sizes, skeletons=self._skeletons, backend=self._backend, store=self._store,
                    staging=self._staging, ledger=self._ledger, stats=self._stats, what=self._settings.what)
        self._ring = ring
        try:
            ring.open()
        except BaseException:
            self._ring = None
            ring.close(failed=True)
            raise
        return True

    def _close(self, implicit: bool, force: bool = False, failed: bool = False) -> None:
        ring = self._ring
        if ring is None or (ring.implicit != implicit and not force):
            return
        self._ring = None
        ring.close(failed=failed or force)

    # -- passes that may stop early (step caching) -----------------------------------------------------
    def pause_after(self, block: int | None) -> None:
        """In each pass (one run through the blocks), copy nothing beyond `block` until the pass decides:
        `resume()` (it goes on) or `end_pass()` (the rest of this pass is skipped: nothing of it crosses
        the bus, and the next pass's first blocks are prefetched instead). None: no pause."""
        self._pause_block = block
        if self._ring is not None:
            self._ring.pause_after(block)

    def resume(self) -> None:
        """The current pass goes on: prefetch past the decision point (up to the next pass's)."""
        if self._ring is not None:
            self._ring.resume()

    def end_pass(self) -> None:
        """The current pass skips its remaining blocks (none of them was copied): the next pass's first runs."""
        if self._ring is not None:
            self._ring.end_pass()

    # -- residency and budget --------------------------------------------------------------------------
    def set_budget(self, budget_bytes: int | None) -> None:
        """None: residency as set; 0: automatic; else bytes (the whole stage). Planned as each run starts."""
        self._residency.budget.budget_bytes = budget_bytes

    def set_resident(self, indices: Iterable[int]) -> None:
        """Keep these blocks on the device between runs; the others stream."""
        if self._ring is not None:
            raise RuntimeError("set_resident() cannot change residency while a run is in progress")
        self._residency.set(indices)

    def apply_budget(self, activation_bytes: int = 0) -> Plan | None:
        """Choose resident blocks and prefetch depth for the budget and these activations, now."""
        return self._residency.apply_budget(activation_bytes)

    def fixed_placed(self, on_device: bool) -> None:
        """The owner of the non-block weights placed them on the device (True) or took them off."""
        self._residency.budget.fixed_on_device = on_device

    def make_room_for_fixed(self) -> None:
        """Before the non-block weights go to the device: a host sharing it frees their bytes."""
        self._residency.budget.make_room_for_fixed()

    # -- questions ---------------------------------------------------------------------------------------
    @property
    def stats(self) -> StreamStats:
        return self._stats

    @property
    def store(self) -> HostStore:
        """Where streamed blocks wait on the host (memory figures)."""
        return self._store

    def block_count(self) -> int:
        return len(self._sizes)

    def block_bytes(self, index: int) -> int:
        return self._sizes[index]

    def layout(self, index: int) -> BlockLayout:
        return self._skeletons.layouts[index]

    def fixed_bytes(self) -> int:
        return self._settings.fixed_bytes

    def resident_blocks(self) -> set[int]:
        return self._residency.indices()

    def streamed_bytes_per_pass(self) -> int:
        """What one run through the blocks copies: every block that is not resident."""
        return sum(self._sizes[i] for i in self._residency.streamed())

    def prefetch_depth(self) -> int:
        return self._residency.prefetch

    def current_plan(self) -> Plan | None:
        """The last plan a budget made (None: none yet)."""
        return self._residency.plan

    def describe_plan(self) -> str | None:
        plan = self._residency.plan
        return plan.describe(len(self._sizes)) if plan else None

    def activation_room(self) -> int | None:
        """Device bytes left for activations (Budget.activation_room); None with nothing to plan with."""
        return self._residency.budget.activation_room()

    def in_session(self) -> bool:
        return self._ring is not None

    def live_buffers(self) -> list[torch.Tensor]:
        """Device and ring buffers still alive (resident blocks' included); for leak checks."""
        return self._ledger.live_buffers()

    def host_tensors(self) -> list[torch.Tensor]:
        """The host memory the streamed blocks hold (page-locked arenas, converted blocks)."""
        return self._store.host_tensors()

    def read_block(self, index: int) -> dict[str, torch.Tensor]:
        """A copy of block `index`'s tensors in host memory (for small probes the caller keeps elsewhere)."""
        buf = torch.empty(self._sizes[index], dtype=torch.uint8)
        self._store.fill(index, buf)
        return self.layout(index).views(buf)

    def __repr__(self) -> str:
        return (f"BlockStreamer({len(self._sizes)} blocks, {sum(self._sizes) / 1024 ** 3:.2f} GiB, "
                f"{len(self._residency)} resident, prefetch {self._residency.prefetch}, "
                f"device {self._backend.device}, host tier {self._store.tier})")
