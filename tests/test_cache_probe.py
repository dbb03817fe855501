"""TeaCache's probe (a device copy of the first dual-stream block's image modulation, made from the host
store) computes what the block itself computes, whatever the block is stored as: plain, scaled fp8 (its
scale), a GGUF (its bytes, decoded the same way)."""

import pytest
import torch
from safetensors.torch import save_file

from hystream.loading import load_dit
from tiny_dit import save_layout
from tiny_gguf import dit_types, twin, write_gguf


def probe_and_block(path):
    dit = load_dit(path, resident_blocks="all")  # the block is bound: its own img_mod is the reference
    try:
        model = dit.model
        first = model.cache_decision_block()
        model.use_step_cache(object(), dit.read_block(first))
        vec = torch.randn(1, model.cfg.hidden, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            got = model.first_block_modulation(vec)[0]
            want = model.double_blocks[0].img_mod(vec)[0]
        model.use_step_cache(None)
        return got, want
    finally:
        dit.close()


@pytest.mark.parametrize("layout", ["comfy", "fp8_scaled", "gguf"])
def test_the_probe_equals_the_blocks_own_modulation(tmp_path, tiny_dit_sd, layout):
    if layout == "gguf":
        tensors = dit_types(tiny_dit_sd)
        path = write_gguf(str(tmp_path / "dit.gguf"), tensors)
        save_file(twin(tensors), str(tmp_path / "twin.safetensors"))
    else:
        path = save_layout(tiny_dit_sd, layout, str(tmp_path))[0]
    got, want = probe_and_block(path)
    assert want.abs().max() > 0.01
    assert torch.equal(got, want), (got - want).abs().max()
