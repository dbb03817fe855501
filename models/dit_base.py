"""What the engine asks of any family's diffusion transformer, written once.

A family's DiT subclasses `StreamedDiT`: it is built on the meta device, the loader binds its small parts
and the streamer each block, and the engine sets and asks what is here — compute dtype and device, the
lean (chunked) path, how the blocks' weights are stored, the step-cache policy of a run, the attention
kernel, the activation peak at a size (measured by the family's estimator on fake tensors), the query chunk
that fits a budget, RoPE tables cached for a run.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..memory_probe import sdpa_kernel
from .layers import Linear
from .lean import auto_chunk
from .rope import GridRope, grid_rope
from .sequence import WholeSequence

MIN_CHUNK = 64  # smallest query chunk choose_chunk tries


class StreamedDiT(nn.Module):
    """A family's DiT. title: the family, in messages ("a HunyuanVideo LoRA").
    estimator(cfg, x_shape, text_tokens, dtype, lean, chunk, device, kernel, stored, lora_rank, ranks) → bytes:
    the family's activation measurement, one rank's when `ranks` share the forward (None in a model that is
    itself being measured)."""

    title = "this model"

    def __init__(self, cfg, estimator: Callable[..., int] | None = None):
        super().__init__()
        self.cfg = cfg
        self._estimator = estimator
        self.compute_dtype = torch.float32
        self.device = torch.device("cpu")
        self.lean = True  # chunked blocks (models/lean.py); False = the plain reference path
        self.chunk_tokens: int | None = None  # lean chunk size; None = automatic
        self.block_weight_dtype: torch.dtype | str | None = None  # how the blocks' Linears are stored (the loader says)
        self.step_cache = None  # a sampling run's step-cache policy (sampling/step_cache.py), or None
        self.sdpa_capability: tuple[int, int] | None = None  # the GPU's, for the attention kernel (None: ask it)
        self._rope: dict = {}  # (grid, device) → (cos, sin) on the device, for the run's steps
        self.sequence_group = None  # the ranks sharing each forward's image tokens (parallel/), None: this device alone
        self.last_split: WholeSequence | None = None  # how the last forward's image tokens lay (for reports)

    # -- what a family's DiT says about itself ---------------------------------------------------------
    @property
    def blocks(self) -> list[nn.Module]:
        """The streamed blocks, in the order they run."""
        raise NotImplementedError

    def lora_aliases(self) -> dict[str, tuple[str, tuple[int, int] | None, bool]]:
        """Other names LoRA files use for this model's Linears: {name: (our Linear, rows or None, swapped)}."""
        return {}

    def lora_hint(self) -> str:
        """The module names this model's LoRAs carry, for the error when none matches."""
        return "this model's module names"

    def image_tokens(self, x_shape) -> int:
        """Tokens the latent [B, C, T, H, W] becomes (after patching)."""
        pt, ph, pw = self.cfg.patch
        return (x_shape[2] // pt) * (x_shape[3] // ph) * (x_shape[4] // pw)

    # -- sequence parallelism ----------------------------------------------------------------------------
    def spread_over(self, group) -> None:
        """Share every forward's image tokens with the ranks of `group` (a parallel.group.SequenceGroup; None:
        this device alone)."""
        self.sequence_group = group if group is not None and group.world > 1 else None

    def token_split(self, n_tokens: int) -> WholeSequence:
        """How this forward's n image tokens lie over the ranks (one rank: all here)."""
        group = self.sequence_group
        self.last_split = WholeSequence(n_tokens) if group is None else group.token_split(n_tokens, self.cfg.heads)
        return self.last_split

    # -- RoPE, cached for a run ------------------------------------------------------------------------
    def rope(self, grid: tuple[int, int, int]) -> tuple[GridRope, GridRope]:
        """RoPE's cos/sin for a token grid, built once per size and device (float64 on the host, then one
        upload of the per-axis tables) instead of at every forward of a sampling run."""
        key = (tuple(grid), str(self.device))
        if key not in self._rope:
            self._rope.clear()  # one size at a time: a run's steps share it
            self._rope[key] = grid_rope(grid, self.cfg.rope_axes, self.cfg.rope_theta, self.device)
        return self._rope[key]

    def clear_caches(self) -> None:
        """Drop what the model keeps on the device between forwards (nothing stays after a stage)."""
        self._rope.clear()

    # -- memory ------------------------------------------------------------------------------------------
    def attention_kernel(self) -> str:
        """The SDPA kernel this model's attention will get (flash / efficient / math), see memory_probe."""
        return sdpa_kernel(self.device.type, self.compute_dtype, self.sdpa_capability, self.cfg.head_dim)

    def lora_rank(self) -> int:
        return max((a.up.shape[1] for m in self.modules() if isinstance(m, Linear) for a in m.lora), default=0)

    def activation_bytes(self, x_shape, text_tokens: int, chunk_tokens: int | None = None,
                         lora_rank: int | None = None) -> int:
        """Peak activation memory of one forward at this size (weights excluded; their upcast and LoRA
        temporaries included), measured on fake tensors with this model's settings and the attention
        kernel SDPA will pick; what the memory budget plans with. lora_rank: adapters of this rank on every
        Linear (default: the ones attached now)."""
        if self._estimator is None:
            raise RuntimeError("this DiT was built without an activation estimator")
        device = "cuda" if self.device.type == "cuda" else "cpu"
        stored = self.block_weight_dtype if self.block_weight_dtype not in (None, self.compute_dtype) else None
        return self._estimator(self.cfg, tuple(x_shape), int(text_tokens), self.compute_dtype, self.lean,
                               chunk_tokens or self.chunk_tokens, device, self.attention_kernel(), stored,
                               self.lora_rank() if lora_rank is None else lora_rank,
                               self.sequence_group.world if self.sequence_group is not None else 1)

    def choose_chunk(self, x_shape, text_tokens: int, limit_bytes: int) -> int | None:
        """The largest query chunk whose activations fit `limit_bytes` (halving from the automatic one), or
        None when the automatic chunk fits. It matters where SDPA falls back to its math kernel (scores of
        chunk × all tokens): elsewhere activations barely depend on the chunk."""
        if not self.lean:
            return None
        chunk = auto_chunk(self.image_tokens(x_shape) + int(text_tokens))
        if self.activation_bytes(x_shape, text_tokens, chunk) <= limit_bytes:
            return None
        while chunk > MIN_CHUNK:
            chunk = max(MIN_CHUNK, chunk // 2)
            if self.activation_bytes(x_shape, text_tokens, chunk) <= limit_bytes:
                return chunk
        return MIN_CHUNK
