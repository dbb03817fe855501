"""What a CLI run shows and leaves behind between stages: the per-stage report, tqdm bars, freeing memory."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager

from ..sizes import GIB


class Report:
    def __init__(self, device):
        import torch

        self.torch, self.device, self.stages = torch, device, []

    @contextmanager
    def stage(self, name: str, streamer=None):
        torch = self.torch
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        if streamer is not None:
            streamer.stats.reset()
        t0 = time.perf_counter()
        entry = {"stage": name}
        try:
            yield entry
        finally:
            entry["seconds"] = round(time.perf_counter() - t0, 2)
            if self.device.type == "cuda":
                entry["peak_vram_gib"] = round(torch.cuda.max_memory_allocated(self.device) / GIB, 3)
            if streamer is not None:
                stats = streamer.stats
                entry.update(streamed_gib=round(stats.bytes_copied / GIB, 3), wait_s=round(stats.wait_seconds, 2),
                             blocks_resident=stats.blocks_resident, blocks_streamed=stats.blocks_streamed,
                             forwards=stats.forwards)
                if self.device.type != "cuda":
                    entry["peak_device_weights_gib"] = round(stats.peak_device_bytes / GIB, 3)
            self.stages.append(entry)

    def print(self) -> None:
        for e in self.stages:
            extras = ", ".join(f"{k} {v}" for k, v in e.items() if k not in ("stage", "seconds"))
            print(f"  {e['stage']:<12s} {e['seconds']:>8.2f} s   {extras}")


def tqdm_bar(total: int, desc: str):
    from tqdm import tqdm

    quiet = os.environ.get("RANK", "0") != "0"  # torchrun: rank 0's bars only
    return tqdm(total=total, desc=desc, unit="step" if desc == "sampling" else "it", leave=True, disable=quiet)


def between_stages(device) -> None:
    """Nothing of a finished stage stays on the GPU, not even in PyTorch's cache: the next stage's
    automatic budget sees the whole card (cached blocks count as used in mem_get_info)."""
    import gc

    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _tick(bar, done: int, total: int) -> None:
    bar.total = total
    bar.n = done
    bar.refresh()


def return_freed_memory_to_the_os() -> None:
    """glibc raises its mmap threshold each time a large block is freed, after which a stage's freed tensors
    stay in the heap and the next stage's peak sits on top of them (the text encoder's ~0.7 GiB under the
    DiT's, at full size). A fixed threshold keeps large blocks mapped: freed, they go back to the OS. Only in
    the CLI's own process, never in ComfyUI's."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to do
        return
    m_mmap_threshold = -3
    libc.mallopt(m_mmap_threshold, 128 * 1024)
