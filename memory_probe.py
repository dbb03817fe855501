"""Peak bytes of the tensors a piece of code creates: measured on real runs, or predicted without
allocating anything by running the code on fake tensors (torch's FakeTensorMode).

A TorchDispatchMode sees every aten op's outputs; each new storage counts until it is freed. Tensors
that existed before (weights, inputs) are not counted. Used to size VAE tiles for a memory budget and by
the tests that check memory is bounded; shared/tools/memest is the validated big brother of the same idea.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary


class LiveBytes(TorchDispatchMode):
    def __init__(self, existing=()):
        """existing: tensors alive before (weights, inputs); views of them are not counted as new."""
        super().__init__()
        self.seen = WeakIdKeyDictionary()
        for t in existing:
            self.seen[t.untyped_storage()] = 0
        self.cur = self.peak = 0

    def _free(self, nbytes: int) -> None:
        self.cur -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                st = t.untyped_storage()
                if st not in self.seen:
                    self.seen[st] = nb = st.nbytes()
                    weakref.finalize(st, self._free, nb)
                    self.cur += nb
        self.peak = max(self.peak, self.cur)
        return out


@contextlib.contextmanager
def fake_mode():
    """Fake tensors for memory predictions: nothing is allocated. Grad-free, and outside inference mode
    even when the caller is in it (ComfyUI runs nodes under inference_mode, where building modules on
    fake tensors fails: their parameters' in-place detach_ is refused)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with torch.inference_mode(False), FakeTensorMode(allow_non_fake_inputs=True), torch.no_grad():
        yield


def fake_peak_bytes(fn: Callable[..., object], *shapes_dtypes_devices) -> int:
    """Peak bytes `fn(*inputs)` would allocate, inputs given as (shape, dtype, device); nothing real is
    allocated (module weights may be real: they are read as fake)."""
    with fake_mode():
        inputs = [torch.empty(shape, dtype=dtype, device=device) for shape, dtype, device in shapes_dtypes_devices]
        probe = LiveBytes()
        with probe:
            out = fn(*inputs)
        del out
    return probe.peak


def sdpa_kernel(device_type: str, dtype: torch.dtype, capability: tuple[int, int] | None = None,
                head_dim: int = 128) -> str:
    """The kernel scaled_dot_product_attention picks: "flash" and "efficient" need O(N) memory, "math"
    materialises the [B, H, Lq, Lk] scores (in fp32). PyTorch's rules: flash on sm80+ for fp16/bf16 with
    head dim ≤ 256; memory-efficient on sm50+ for fp32/fp16, and for bf16 only on sm80+; else math. The
    CPU's fused kernel is blockwise (flash-like)."""
    if device_type != "cuda":
        return "flash"
    if capability is None:
        capability = torch.cuda.get_device_capability()
    if capability >= (8, 0) and dtype in (torch.float16, torch.bfloat16) and head_dim <= 256:
        return "flash"
    if capability >= (5, 0) and (dtype in (torch.float32, torch.float16) or (dtype == torch.bfloat16 and capability >= (8, 0))):
        return "efficient"
    return "math"


@contextlib.contextmanager
def attention_kernel(kind: str = "flash"):
    """Within the block, scaled_dot_product_attention allocates what the named kernel allocates on a GPU,
    whatever device the probe's fake tensors claim (see sdpa_kernel)."""
    import torch.nn.functional as F

    saved = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = math_stub if kind == "math" else flash_stub
    try:
        yield
    finally:
        F.scaled_dot_product_attention = saved


def flash_attention():
    return attention_kernel("flash")


def flash_stub(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """What a flash / memory-efficient attention kernel allocates: the output and an fp32 log-sum-exp
    per query (no L×S scores). For probes only: the values are not attention."""
    b, h, lq, _ = query.shape
    out = torch.empty(b, h, lq, value.shape[-1], dtype=query.dtype, device=query.device)
    lse = torch.empty(b, h, lq, dtype=torch.float32, device=query.device)
    del lse
    return out


def math_stub(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """What SDPA's math kernel allocates: fp32 copies of half-precision q, k, v (it reduces in fp32), the
    [B, H, Lq, Lk] scores and their softmax in fp32, the output. For probes only."""
    b, h, lq, d = query.shape
    lk = key.shape[-2]
    half = query.dtype in (torch.float16, torch.bfloat16)
    copies = [torch.empty(t.shape, dtype=torch.float32, device=t.device) for t in (query, key, value)] if half else []
    scores = torch.empty(b, h, lq, lk, dtype=torch.float32, device=query.device)
    probs = torch.empty_like(scores)
    del scores
    out32 = torch.empty(b, h, lq, value.shape[-1], dtype=torch.float32, device=query.device)
    del probs, copies
    out = torch.empty(b, h, lq, d, dtype=query.dtype, device=query.device) if half else out32
    return out
