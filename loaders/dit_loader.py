"""A diffusion transformer of any family, opened for streamed execution.

The loading sequence itself is loaders/streamed.py; here the small fixed parts (embedders, refiner,
final layer) are read into ordinary host memory and placed on the device for each stage, and the handle
holds what a stage needs: the model skeleton, its streamer, its family. Host memory never holds the state
dict; a dropped handle gives back its page-locked memory and file handles.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch
from torch import nn

from ..offload.binding import bind
from ..offload.streamer import BlockStreamer
from .dtypes import check_compute_dtype, check_weight_dtype
from .recipes import read_recipe
from .streamed import DEFAULT_OPTIONS, StreamOptions, load_streamed
from .tensor_source import TensorSource


@dataclass
class LoadedDiT:
    """A DiT ready to run: the model skeleton, its streamer, its family and what was loaded from where."""

    model: nn.Module
    streamer: BlockStreamer
    config: object
    layout: str
    path: str
    file_dtype: torch.dtype
    family: object  # families.base.Family
    source: TensorSource = field(repr=False)
    fixed_host: dict = field(repr=False, default_factory=dict)  # the non-block tensors, on the host
    units: object = field(repr=False, default=None)  # offload.units.StreamUnits: the streamer's units per block
    options: object = field(repr=False, default=None)  # loaders.streamed.StreamOptions it was opened with
    on_device: bool = False

    def __call__(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    @property
    def stats(self):
        return self.streamer.stats

    def to_device(self) -> None:
        """Place the non-block parts on the compute device (blocks arrive with each run)."""
        if not self.on_device:
            device = self.model.device
            self.streamer.make_room_for_fixed()
            bind(self.model, {n: t.to(device) for n, t in self.fixed_host.items()})
            self.on_device = True
            self.streamer.fixed_placed(True)

    def release_device(self) -> None:
        """Hold nothing on the compute device between runs: resident blocks and the non-block parts go
        back to the host (the host store stays, so the next run starts without touching the disk)."""
        self.streamer.set_resident(())
        self.model.clear_caches()
        if self.model.device.type != "cpu" and self.on_device:
            bind(self.model, self.fixed_host)
            self.on_device = False
            self.streamer.fixed_placed(False)

    def host_tensors(self) -> list[torch.Tensor]:
        """The host RAM this DiT holds: its non-block parts and the streamer's page-locked / converted blocks."""
        return list(self.fixed_host.values()) + self.streamer.host_tensors()

    def close(self) -> None:
        """Free device buffers (the non-block parts too), page-locked memory and the file handles."""
        self.release_device()
        self.streamer.detach()
        self.source.close()

    def read_block(self, block: int) -> dict:
        """A host copy of block `block`'s tensors, whatever units it streams as (a step cache's probe)."""
        return {n: t for u in self.units.of_block(block) for n, t in self.streamer.read_block(u).items()}


def release_host_memory(store, source) -> None:
    store.release()
    source.close()


def _activation_estimate(model: nn.Module):
    """A bare forward's activation bytes, from its inputs (the automatic budget of a forward outside a run)."""
    def estimate(args: tuple, kwargs: dict) -> int:
        return model.forward_activation_bytes(args, kwargs)
    return estimate


def load_dit_from(source: TensorSource, family, path: str, device: str | torch.device = "cpu",
                  options: StreamOptions = DEFAULT_OPTIONS) -> LoadedDiT:
    """`family`'s DiT from an open checkpoint (closed on failure; the handle owns it after)."""
    check_weight_dtype(options.weight_dtype)
    check_compute_dtype(options.compute)
    device = torch.device(device)
    try:
        spec = family.dit_spec(set(source.keys()))
        s = load_streamed(source, spec, device, options, activation_estimate=_activation_estimate)
        model = s.model
        model.compute_dtype, model.block_weight_dtype, model.device = s.compute_dtype, s.block_dtype, device
        # the small non-block parts (0.18 GiB at full size) stay in ordinary memory: nothing is locked for a
        # one-off upload per stage, and nothing stays locked when the model is dropped
        fixed = {n: read_recipe(source, r, dt) for n, (r, dt) in s.fixed.items()}
        loaded = LoadedDiT(model, s.streamer, s.cfg, s.layout, str(path), s.file_dtype, family, source, fixed, units=s.units,
                           options=options)
        weakref.finalize(loaded, release_host_memory, s.streamer.store, source)
        loaded.to_device()
        return loaded
    except BaseException:
        source.close()
        raise
