"""Open a model file of any family: the registry tells whose file it is (by its keys and shapes, never its
name), then loaders/ loads it with that family's spec. What the nodes, the CLI, the demo and the benches
call; each returns a handle that knows its family."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from .families import registry
from .loaders.checkpoint import open_checkpoint
from .loaders.dit_loader import LoadedDiT, load_dit_from
from .loaders.streamed import StreamOptions, read_spec
from .loaders.vae_loader import LoadedVAE
from .offload.settings import HostHandOver


def load_dit(path: str, device: str | torch.device = "cpu", *, weight_dtype: str = "auto", prefetch_blocks: int = 1,
             vram_budget_gb: float | None = None, resident_blocks: Iterable[int] | str | None = None,
             host_tier: str = "auto", compute: str = "auto", backend=None, ram_reserve: int = 0,
             reserve_bytes: int = 0, hand_over: HostHandOver | None = None) -> LoadedDiT:
    """Open a DiT checkpoint (file or folder, any supported layout and family) for streamed execution.

    vram_budget_gb: device memory for the whole stage (weights + ring + activations); the blocks that
        fit stay resident, re-planned for each run's size. 0 = automatic (free device memory; on the CPU
        every block streams). None = no budget: `resident_blocks` decides.
    resident_blocks: None → every block streams; "all" → every block stays on the device; or indices.
    host_tier: "pinned" | "mapped" | "auto" (CUDA; auto pins when the blocks fit in free RAM).
    compute: "auto" | "bf16" | "fp16" | "fp32" — fp16 only when chosen here (see loaders/dtypes.py).
    backend: the streamer's device backend (tests pass a simulated CUDA); default from `device`.
    ram_reserve: RAM the host may still page-lock for itself; the pinned tier never counts on it.
    reserve_bytes: device memory an automatic budget leaves to other programs (the CLI's --reserve-vram).
    hand_over: a host sharing the device (nodes/host.py share_device): its free memory and make_room.
    """
    options = StreamOptions(weight_dtype=weight_dtype, compute=compute, prefetch=prefetch_blocks,
                            vram_budget_gb=vram_budget_gb, resident=resident_blocks, host_tier=host_tier,
                            ram_reserve=ram_reserve, reserve_bytes=reserve_bytes, hand_over=hand_over, backend=backend)
    source = open_checkpoint(path, subfolders=("transformer",))
    try:
        family = registry.for_dit(source)
    except BaseException:
        source.close()
        raise
    return load_dit_from(source, family, path, device, options)


def read_dit_config(path: str):
    """(family, config) of a DiT from the file's header alone (e.g. which I2V variant it is), nothing loaded."""
    source = open_checkpoint(path, subfolders=("transformer",))
    try:
        family = registry.for_dit(source)
        return family, read_spec(family.dit_spec(set(source.keys())), source)[2]
    finally:
        source.close()


def text_encoder_family(path: str):
    source = open_checkpoint(path, subfolders=("text_encoder",))
    try:
        return registry.for_text_encoder(source)
    finally:
        source.close()


def load_text_encoder(first: str, second: str, device: str | torch.device = "cpu", **options):
    """A family's text stack from its two files (the language model decides the family): a handle with
    `conditioning(prompt)`. Options as the family's loader takes them (tokenizer_dir, host_tokenizer_dirs,
    prefetch_blocks, vram_budget_gb, host_tier, reserve_bytes, hand_over)."""
    return text_encoder_family(first).load_text_encoder(first, second, torch.device(device), **options)


def load_vae(path: str, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> LoadedVAE:
    """A VAE of any family, whole on the host (moved to the device for its stage)."""
    source = open_checkpoint(path, subfolders=("vae",))
    try:
        family = registry.for_vae(source)
    except BaseException:
        source.close()
        raise
    return family.load_vae(source, path, torch.device(device), dtype)
