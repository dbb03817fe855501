"""gpu_check sections about the device itself: environment, pinning_refusal, pinned, gguf_decode.

Each takes (ctx, share) and returns its figures; on the CPU dry run the GPU-only figures say so."""

from __future__ import annotations

import ctypes
import os
import platform
import shutil
import subprocess

import torch

from measure import GIB, median, timed

NEEDS_GPU = "skipped: needs a GPU"


def driver_version() -> str | None:
    """nvidia-smi when present, else the driver library itself; never required."""
    if shutil.which("nvidia-smi"):
        r = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=20, check=False)
        if r.returncode == 0 and r.stdout.strip():
            return r.stdout.strip().splitlines()[0]
    try:
        version = ctypes.c_int()
        ctypes.CDLL("libcuda.so.1").cuDriverGetVersion(ctypes.byref(version))
        return f"CUDA driver API {version.value // 1000}.{version.value % 1000 // 10}"
    except OSError:
        return None


def environment(ctx, share) -> dict:
    info = {"torch": torch.__version__, "cuda_build": torch.version.cuda, "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "driver": driver_version()}
    if ctx.device.type != "cuda":
        info["gpu"] = NEEDS_GPU
        return info
    dev = ctx.device
    props = torch.cuda.get_device_properties(dev)
    torch.zeros(1, device=dev)  # the first allocation: the context exists now
    torch.cuda.synchronize(dev)
    free, total = torch.cuda.mem_get_info(dev)
    info.update(name=props.name, capability=list(torch.cuda.get_device_capability(dev)),
                multiprocessors=props.multi_processor_count, total_gib=round(total / GIB, 2),
                allocator_backend=torch.cuda.get_allocator_backend(),
                cuda_context_gib=round((total - free - torch.cuda.memory_reserved(dev)) / GIB, 3))
    return info


def refusing_face(clears: bool):
    """torch.cuda as the streamer uses it, except that cudaHostRegister is refused the way a full system
    refuses it: the error code returned and latched as the thread's last error (here by registering the
    buffer a second time, cudaErrorHostMemoryAlreadyRegistered; the first registration is undone)."""
    from hystream.offload.backend import TorchCuda

    class Refusing(TorchCuda):
        def __init__(self):
            super().__init__()
            self.codes = []

        def host_register(self, t):
            first = super().host_register(t)
            err = super().host_register(t)
            if first == 0:
                super().host_unregister(t)  # succeeds; the refusal stays latched
            self.codes.append(err)
            return err

        def clear_error(self):
            return super().clear_error() if clears else 0

    return Refusing()


def kernel_raises(dev) -> str | None:
    """Launch a kernel and synchronize on this thread: the error message, or None."""
    try:
        (torch.ones(1024, device=dev) * 2).sum().item()
        torch.cuda.synchronize(dev)
        return None
    except Exception as e:  # noqa: BLE001 - RuntimeError, or torch.AcceleratorError where it is not one
        return f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"


def pinning_refusal(ctx, share) -> dict:
    from hystream.offload.backend import CudaBackend

    if ctx.device.type != "cuda":
        from stream_check import SimCuda

        refused = CudaBackend("cpu", cuda=SimCuda(refuse_pinning=True)).alloc_pinned(1 << 20)
        return {"alloc_pinned_returned_none": refused is None, "raised": NEEDS_GPU}
    face = refusing_face(clears=True)
    buf = CudaBackend(ctx.device, cuda=face).alloc_pinned(1 << 20)
    raised = kernel_raises(ctx.device)
    # the control: the same refusal without cudaGetLastError must surface at the kernel, or this proves nothing
    control = refusing_face(clears=False)
    CudaBackend(ctx.device, cuda=control).alloc_pinned(1 << 20)
    raised_without_clear = kernel_raises(ctx.device)
    torch.cuda.cudart().cudaGetLastError()  # leave nothing latched for the next sections
    return {"alloc_pinned_returned_none": buf is None, "refusal_codes": face.codes + control.codes,
            "raised": raised is not None, "message": raised,
            "control_raised_without_clearing": raised_without_clear is not None,
            "control_message": raised_without_clear}


def locked_kib() -> dict:
    """The kernel's own count of this process's pinned / locked pages (/proc/self/status), where it has one."""
    found = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(("VmPin:", "VmLck:")):
                    found[line.split(":")[0]] = int(line.split()[1])
    except OSError:
        pass
    return found


def pinned(ctx, share) -> dict:
    """Page-locked bytes held vs the weight bytes they hold (pinned tier): every block's arena filled."""
    from hystream.loading import load_dit
    from hystream.offload.backend import CudaBackend
    from hystream.offload.host_store import pinned_bytes

    if ctx.dit_path is None:
        return {"skipped": "no DiT file (see dit_file)"}
    if ctx.device.type == "cuda":
        backend = None
    else:  # the dry run page-locks through the simulated CUDA: the same HostStore / PinnedBuffer code
        from stream_check import SimCuda

        backend = CudaBackend("cpu", cuda=SimCuda())
    before = locked_kib()
    dit = load_dit(ctx.dit_path, ctx.device, prefetch_blocks=1, host_tier="pinned", backend=backend)
    try:
        store, n = dit.streamer.store, dit.streamer.block_count()
        for i in range(n):
            store.packed(i)
        held, sizes = store.held_bytes, [dit.streamer.block_bytes(i) for i in range(n)]
        after = locked_kib()
    finally:
        dit.close()
    weights = sum(sizes)
    os_count = {k: after[k] - before.get(k, 0) for k in after} if ctx.device.type == "cuda" else NEEDS_GPU
    return {"pinned_bytes": held, "weight_bytes": weights, "pinned_ratio": round(held / weights, 4),
            "planned_pinned_bytes": pinned_bytes(sizes), "os_pinned_kib_delta": os_count}


def time_within(fn, dev, seconds: float, most: int = 10) -> float:
    """Median seconds of `fn` after a warm-up, repeated while `seconds` allow (at least once)."""
    first = timed(fn, dev)
    reps = max(1, min(most, int(seconds / max(first, 1e-4))))
    return median([timed(fn, dev) for _ in range(reps)])


def bf16_copy_seconds(rows: int, cols: int, dev, seconds: float) -> float:
    """The bf16 weight a quantised one replaces, copied from page-locked memory to the device."""
    from hystream.offload.backend import CudaBackend

    nbytes = rows * cols * 2
    pinned_buf = CudaBackend(dev).alloc_pinned(nbytes)
    src = pinned_buf.tensor if pinned_buf is not None else torch.empty(nbytes, dtype=torch.uint8).pin_memory()
    dst = torch.empty(nbytes, dtype=torch.uint8, device=dev)
    try:
        return time_within(lambda: dst.copy_(src, non_blocking=True), dev, seconds)
    finally:
        if pinned_buf is not None:
            pinned_buf.release()


def gguf_decode(ctx, share) -> dict:
    """Decode throughput per quant type for a 12288 × 3072 weight (random bytes: fp16 scales may decode to
    inf/nan, which does not change the time) vs copying its bf16 form from pinned memory."""
    from hystream.quant.dequant import dequantize
    from hystream.quant.kinds import KINDS

    dev = ctx.device
    rows, cols = (64, 512) if ctx.small else (12288, 3072)
    copy_s = bf16_copy_seconds(rows, cols, dev, share.left() / 12) if dev.type == "cuda" else None
    kinds = {}
    for name, kind in KINDS.items():
        g = torch.Generator().manual_seed(0)
        data = torch.randint(0, 256, (rows, kind.row_bytes(cols)), dtype=torch.uint8, generator=g).to(dev)
        s = time_within(lambda data=data, kind=kind: dequantize(data, kind, cols, torch.bfloat16), dev,
                        share.left() / (2 * len(KINDS)))
        kinds[name] = {"ms": round(1000 * s, 3), "decoded_gb_per_s": round(rows * cols * 2 / s / 1e9, 2),
                       "quantised_gb_per_s": round(data.numel() / s / 1e9, 2),
                       "over_bf16_copy": round(s / copy_s, 3) if copy_s else NEEDS_GPU}
    return {"weight": [rows, cols], "bf16_copy_ms": round(1000 * copy_s, 3) if copy_s else NEEDS_GPU,
            "bf16_copy_gb_per_s": round(rows * cols * 2 / copy_s / 1e9, 2) if copy_s else NEEDS_GPU, "kinds": kinds}
