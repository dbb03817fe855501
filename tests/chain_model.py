"""The generic model the streamer tests run: a chain of small blocks, streamed from a state-dict source.
No pytest here: bench/gpu_check.py runs the same model on a bare GPU machine."""

import time

import torch
from torch import nn

from hystream.offload.settings import StreamSettings
from hystream.offload.source import StateDictSource
from hystream.offload.streamer import BlockStreamer


class Block(nn.Module):
    def __init__(self, dim, sleep=0.0, fail=False):
        super().__init__()
        self.lin = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.sleep = sleep
        self.fail = fail
        self.gpu_cycles = 0  # on a GPU: spin the compute stream so the device lags far behind the host

    def forward(self, x):
        if self.sleep:
            time.sleep(self.sleep)  # stands in for compute; releases the GIL like real kernels
        if self.gpu_cycles and x.is_cuda:
            torch.cuda._sleep(self.gpu_cycles)
        if self.fail:
            raise RuntimeError("block failed")
        return x + torch.tanh(self.lin(self.norm(x)))


class Chain(nn.Module):
    def __init__(self, n=6, dim=32, sleep=0.0):
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, sleep) for _ in range(n))
        self.stop_after = None

    def forward(self, x):
        for i, b in enumerate(self.blocks):
            if self.stop_after is not None and i > self.stop_after:
                break
            x = b(x)
        return x


def streamed(model: Chain, source_cls=StateDictSource, backend=None, **kw):
    """Move the blocks' weights into a source, leave the blocks as meta skeletons, attach a streamer.
    `kw`: StreamSettings fields (and `delay`, for a slow source)."""
    states = [{k: v.clone() for k, v in b.state_dict().items()} for b in model.blocks]
    extra = {"delay": kw.pop("delay")} if "delay" in kw else {}
    source = source_cls(states, **extra)
    for b in model.blocks:
        b.to_empty(device="meta")
    if "resident" in kw:
        kw["resident"] = tuple(kw["resident"])
    return BlockStreamer(model, model.blocks, source, "cpu", StreamSettings(**kw), backend=backend)


def fresh(seed=0, **kw):
    torch.manual_seed(seed)
    return Chain(**kw)


def chain_input() -> torch.Tensor:
    return torch.randn(4, 32, generator=torch.Generator().manual_seed(1))


def reference(seed=0, **kw):
    m = fresh(seed, **kw)
    x = chain_input()
    with torch.no_grad():
        return m, x, m(x)
