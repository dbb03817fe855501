"""GGUF dequantisation (quant/dequant.py) equals the gguf package's reference `quants.dequantize` exactly
(float32), for every supported type: on data quantised by `gguf.quants.quantize` where the package can,
and on random valid blocks (random bytes with finite fp16 scale fields) for every type, K-quants included."""

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")

from hystream.quant.dequant import dequantize
from hystream.quant.kinds import KINDS

# byte offsets of each block's fp16 fields (d, dmin, m): they must hold finite numbers in a valid block
HALF_FIELDS = {"Q8_0": (0,), "Q4_0": (0,), "Q4_1": (0, 2), "Q5_0": (0,), "Q5_1": (0, 2), "Q2_K": (80, 82),
               "Q3_K": (108,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,)}


def random_blocks(kind, rows: int, cols: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(rows, kind.row_bytes(cols)), dtype=np.uint8)
    blocks = data.reshape(-1, kind.type_size)
    for off in HALF_FIELDS[kind.name]:
        blocks[:, off:off + 2] = rng.normal(0, 0.05, size=(blocks.shape[0], 1)).astype(np.float16).view(np.uint8)
    return data


def reference(data: np.ndarray, name: str) -> np.ndarray:
    return gguf.quants.dequantize(data, getattr(gguf.GGMLQuantizationType, name)).astype(np.float32)


@pytest.mark.parametrize("name", sorted(KINDS))
def test_random_valid_blocks_decode_exactly(name):
    kind = KINDS[name]
    cols = 2 * kind.block_size * (2 if kind.block_size == 32 else 1)
    data = random_blocks(kind, 5, cols, seed=len(name))
    want = torch.from_numpy(reference(data, name).reshape(5, cols))
    got = dequantize(torch.from_numpy(data), kind, cols)
    assert got.dtype == torch.float32 and got.shape == (5, cols)
    assert torch.equal(got, want), (got - want).abs().max()
    # any range of rows decodes on its own (the fused projections take row ranges)
    assert torch.equal(dequantize(torch.from_numpy(data[1:4]), kind, cols), want[1:4])


@pytest.mark.parametrize("name", sorted(KINDS))
def test_quantised_by_the_gguf_package_decode_exactly(name):
    qtype = getattr(gguf.GGMLQuantizationType, name)
    values = np.random.default_rng(1).normal(0, 1, size=(4, 512)).astype(np.float32)
    try:
        data = gguf.quants.quantize(values, qtype)
    except (NotImplementedError, gguf.QuantError):
        pytest.skip(f"the gguf package cannot quantise {name} (covered by the random-block test)")
    kind = KINDS[name]
    got = dequantize(torch.from_numpy(np.ascontiguousarray(data)), kind, 512)
    assert torch.equal(got, torch.from_numpy(reference(data, name).reshape(4, 512)))
    assert (got - torch.from_numpy(values)).abs().mean() < 0.5  # and it is the quantised data, roughly
