"""Point a module's parameters and buffers at given tensors, and back at meta placeholders.

Binding swaps entries of `_parameters` / `_buffers` in place: no copy, no change to the module's code,
so it works on our DiT blocks and on transformers' Llama layers alike.
"""

from __future__ import annotations

import torch
from torch import nn


def _owner(module: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, _, attr = name.rpartition(".")
    return (module.get_submodule(path) if path else module), attr


def bind(module: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    for name, t in tensors.items():
        owner, attr = _owner(module, name)
        if attr in owner._parameters:
            owner._parameters[attr] = nn.Parameter(t, requires_grad=False)
        elif attr in owner._buffers:
            owner._buffers[attr] = t
        else:
            raise KeyError(f"{type(module).__name__} has no parameter or buffer {name!r}")


def unbind(module: nn.Module, names, meta: dict[str, torch.Tensor]) -> None:
    """Drop the references to real memory: every bound name goes back to its meta placeholder."""
    bind(module, {name: meta[name] for name in names})


class Skeletons:
    """Streamed blocks as skeletons: each bound to a buffer of its packed bytes while it is on the device,
    else to meta placeholders (no memory)."""

    def __init__(self, blocks, layouts):
        self.blocks, self.layouts = list(blocks), list(layouts)
        self._meta = [{s.name: torch.empty(s.shape, dtype=s.dtype, device="meta") for s in lay.slots}
                      for lay in self.layouts]
        for i in range(len(self.blocks)):
            self.unbind(i)  # validates names, frees nothing real yet

    def bind(self, index: int, buf: torch.Tensor) -> None:
        bind(self.blocks[index], self.layouts[index].views(buf))

    def unbind(self, index: int) -> None:
        unbind(self.blocks[index], self._meta[index], self._meta[index])
