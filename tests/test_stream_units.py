"""Blocks streamed as their parts (offload/units.py, models/parts.py): every weight belongs to exactly one
part, a ring slot is a part (not a block), and a part list that does not match what the forward uses fails
loudly instead of computing with the wrong weights."""

import pytest
import torch

from hystream.families.hunyuan_video.config import DiTConfig
from hystream.families.hunyuan_video.dit import HunyuanVideoDiT
from hystream.families.hunyuan_video.planning import LLAVA_SHAPES
from hystream.families.hunyuan_video.text_loader import LLAVA
from hystream.loading import load_dit
from hystream.models.dit_blocks import DoubleStreamBlock
from hystream.models.llama_encoder import LAYER_PARTS, LlamaStates, infer_llama_config
from hystream.offload.units import StreamUnits
from tiny_dit import TINY, dit_inputs, save_layout, tencent_state_dict


def unit_params(units: StreamUnits, block: int) -> int:
    return sum(p.numel() for u in units.of_block(block) for p in units.modules[u].parameters())


def full_size_dit():
    with torch.device("meta"):
        return HunyuanVideoDiT(DiTConfig())


def test_every_weight_is_in_exactly_one_part():
    model = full_size_dit()
    units = StreamUnits(model.blocks)
    for b, block in enumerate(model.blocks):
        names = dict(block.named_parameters())
        seen = []
        for name, param in names.items():
            u, local = units.unit_of(b, name)
            assert u in units.of_block(b)
            assert units.modules[u].get_parameter(local) is param  # the very parameter the block uses
            seen.append(u)
        # the parts hold nothing but the block's weights, and all of them, once
        assert unit_params(units, b) == sum(p.numel() for p in names.values()), b
        assert sorted(set(seen)) == list(units.of_block(b))  # no empty part


def test_a_slot_is_a_part_far_smaller_than_a_block():
    model = full_size_dit()
    whole, split = StreamUnits(model.blocks, split=False), StreamUnits(model.blocks)

    def largest(units):
        return max(sum(p.numel() for p in m.parameters()) for m in units.modules)

    double = sum(p.numel() for p in model.double_blocks[0].parameters())
    assert largest(whole) == double
    assert 2 * largest(split) < double  # a ring of two slots is smaller than one double block
    assert len(split) == 2 * 7 + 20 * 4 + 40  # refiner matrix by matrix, double blocks in 4 parts, single whole


def test_decoder_layers_stream_projection_by_projection():
    config = infer_llama_config(LLAVA_SHAPES, "LLaVA-Llama-3-8B", LLAVA)
    layers = LlamaStates(config, torch.device("cpu")).layers
    units = StreamUnits(layers)
    layer = sum(p.numel() for p in layers[0].parameters())
    largest = max(sum(p.numel() for p in m.parameters()) for m in units.modules)
    assert largest == 4096 * 14336 and 2 * largest < layer / 1.8  # a slot is one MLP matrix
    assert len(units) == len(LAYER_PARTS) * len(layers)
    assert units.unit_of(1, "mlp.down_proj.weight") == (len(LAYER_PARTS) + LAYER_PARTS.index("mlp.down_proj"), "weight")
    with pytest.raises(KeyError, match="none of its parts"):
        units.unit_of(0, "rotary.inv_freq")


def test_a_part_list_out_of_step_with_the_forward_fails_loudly(tmp_path, monkeypatch):
    """The image projection listed with the image MLP: when the attention part runs, the projection's weight is
    not on the device. The streamed forward must raise, not compute with a stale or placeholder weight."""
    path, _ = save_layout(tencent_state_dict(), "comfy", str(tmp_path))
    parts = list(DoubleStreamBlock.PARTS)
    parts[1] = tuple(n for n in parts[1] if n != "img_attn_proj")
    parts[2] = (*parts[2], "img_attn_proj")
    monkeypatch.setattr(DoubleStreamBlock, "PARTS", tuple(parts))
    dit = load_dit(path, prefetch_blocks=1)
    try:
        with pytest.raises((RuntimeError, NotImplementedError)), torch.no_grad():
            dit(**dit_inputs(1))
    finally:
        dit.close()
    assert TINY.depth_double == 2


@pytest.mark.parametrize("prefetch", [1, 2])
def test_parts_stream_through_the_checked_cuda_path(tmp_path, prefetch):
    """The DiT with its blocks in parts, streamed through the simulated CUDA whose vector clocks check every
    read of a ring slot against the copy that filled it (tests/stream_check.py): no unordered read, nothing
    left page-locked, and the output equals the all-resident model's bit for bit."""
    from hystream.offload.backend import CudaBackend
    from stream_check import SimCuda

    path, _ = save_layout(tencent_state_dict(), "comfy", str(tmp_path))
    inputs = dit_inputs(1)
    ref = load_dit(path, resident_blocks="all")
    with torch.no_grad():
        want = ref(**inputs)
    ref.close()
    sim = SimCuda()
    dit = load_dit(path, prefetch_blocks=prefetch, backend=CudaBackend("cpu", cuda=sim))
    try:
        with sim.compute_reads(), torch.no_grad():
            got = [dit(**inputs) for _ in range(2)]
        assert all(torch.equal(g, want) for g in got)
        assert dit.stats.copies == 2 * dit.streamer.block_count()
    finally:
        dit.close()
    assert sim.pinned_live == 0
    sim.check()
