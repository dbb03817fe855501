"""What the HyStream node types carry between nodes (HYSTREAM_DIT, …): shared by every node that takes them."""

from __future__ import annotations

from dataclasses import dataclass

from ..loaders.dit_loader import LoadedDiT
from ..loaders.lora import LoRA
from ..sampling.step_cache import StepCacheSettings


@dataclass(frozen=True)
class DiTHandle:
    """HYSTREAM_DIT: the loaded DiT plus the LoRAs chained onto it (the DiT itself is never modified, so
    one loader output can feed graphs with and without LoRAs)."""

    dit: LoadedDiT
    loras: tuple[tuple[LoRA, float], ...] = ()
    step_cache: StepCacheSettings | None = None  # from HyStreamStepCache

    def _comfy_cache_tensors(self):
        """Sizes this handle for ComfyUI's RAM-pressure cache (0.38), which counts an output's tensors:
        the DiT's host memory and the LoRAs' matrices."""
        return self.dit.host_tensors() + [t for lora, _ in self.loras for p in lora.parts for t in (p.down, p.up)]
