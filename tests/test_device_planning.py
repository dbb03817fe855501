"""What the GPU path decides before it runs, checked without a GPU: the compute dtype per card, the SDPA
kernel SDPA will pick, activations estimated with that kernel (the math kernel's N×N scores), chunks
chosen to fit, and the weights' own temporaries (fp8 upcasts, LoRA merges) counted — with the estimate
still equal to a real run's allocations."""

import dataclasses

import pytest
import torch
from torch.func import functional_call

from hystream.families.hunyuan_video.config import DiTConfig
from hystream.families.hunyuan_video.dit import HunyuanVideoDiT
from hystream.families.hunyuan_video.dit_spec import DIT_SPEC
from hystream.families.hunyuan_video.memory import forward_peak_bytes
from hystream.loaders.dtypes import compute_dtype
from hystream.memory_probe import LiveBytes, attention_kernel, sdpa_kernel
from hystream.models.layers import Linear, LowRankAdapter

GIB = 1024 ** 3
BF16, FP16, FP32, FP8 = torch.bfloat16, torch.float16, torch.float32, torch.float8_e4m3fn


@pytest.mark.parametrize("weight_dtype, file_dtype, has_bf16, fp16_ok, want", [
    ("auto", BF16, True, False, BF16),
    ("auto", BF16, False, False, FP32),  # Turing/Volta: no bf16 kernels, and bf16 SDPA would be the math kernel
    ("auto", FP16, True, False, BF16),  # the DiT never computes in fp16 unless asked
    ("auto", FP16, False, False, FP32),
    ("fp16", BF16, True, False, BF16),
    ("auto", FP8, True, False, BF16),
    ("fp8_e4m3fn", BF16, False, False, FP32),
    ("auto", FP16, True, True, FP16),  # text encoders and VAE keep fp16
])
def test_auto_compute_dtype(weight_dtype, file_dtype, has_bf16, fp16_ok, want):
    got = compute_dtype(weight_dtype, file_dtype, torch.device("cuda", 0), fp16_ok=fp16_ok, has_bf16=has_bf16)
    assert got == want
    assert compute_dtype(weight_dtype, file_dtype, torch.device("cpu"), fp16_ok=fp16_ok) == FP32


def test_explicit_compute_dtype_wins():
    assert compute_dtype("auto", BF16, torch.device("cuda", 0), compute="fp16", fp16_ok=False, has_bf16=True) == FP16
    assert compute_dtype("auto", BF16, torch.device("cpu"), compute="bf16") == BF16


@pytest.mark.parametrize("capability, dtype, want", [
    ((8, 6), BF16, "flash"), ((8, 0), FP16, "flash"), ((9, 0), BF16, "flash"),
    ((8, 6), FP32, "efficient"), ((7, 5), FP16, "efficient"), ((7, 5), FP32, "efficient"), ((6, 1), FP32, "efficient"),
    ((7, 5), BF16, "math"), ((7, 0), BF16, "math"),
])
def test_sdpa_kernel_choice(capability, dtype, want):
    assert sdpa_kernel("cuda", dtype, capability) == want
    assert sdpa_kernel("cpu", dtype) == "flash"


FULL_SIZE = DiTConfig()


def model_on(capability, dtype=BF16, cfg=FULL_SIZE):
    model = DIT_SPEC.build(cfg, "meta")  # as the loader builds it: with the family's activation estimator
    model.device, model.compute_dtype, model.sdpa_capability = torch.device("cuda", 0), dtype, capability
    return model


def test_the_math_kernel_is_estimated_and_chunked_to_fit():
    """bf16 on a Turing card: SDPA's math kernel builds chunk × N scores in fp32 (at 720p×129, ~21 GB per
    1024-query chunk); here 368×640×65 (15.9k tokens): ~3 GB; choose_chunk finds the chunk that fits."""
    shape, text = (1, 16, 17, 46, 80), 256
    fast, slow = model_on((8, 6)), model_on((7, 5))
    assert slow.attention_kernel() == "math" and fast.attention_kernel() == "flash"
    flash, math = fast.activation_bytes(shape, text), slow.activation_bytes(shape, text)
    scores = 2 * 24 * 1024 * (17 * 23 * 40 + text) * 4
    assert flash < 1 * GIB and math > flash + scores, (flash / GIB, math / GIB)
    chunk = slow.choose_chunk(shape, text, int(1.5 * GIB))
    assert chunk is not None and chunk < 1024
    assert slow.activation_bytes(shape, text, chunk) <= 1.5 * GIB
    assert fast.choose_chunk(shape, text, int(1.5 * GIB)) is None  # flash: the automatic chunk already fits
    assert model_on((7, 5), FP32).attention_kernel() == "efficient"  # what auto picks on that card


def tiny_cfg():
    return dataclasses.replace(DiTConfig(), hidden=256, heads=2, mlp_hidden=1024, single_mlp_hidden=1024,
                               refiner_mlp_hidden=1024, text_dim=64, pooled_dim=32, depth_refiner=1,
                               depth_double=1, depth_single=1)


def test_fp8_upcasts_and_lora_merges_are_counted():
    cfg, shape, text = DiTConfig(), (1, 16, 5, 30, 52), 256
    plain = forward_peak_bytes(cfg, shape, text, BF16, True, None, "cuda", "flash", None, 0)
    fp8 = forward_peak_bytes(cfg, shape, text, BF16, True, None, "cuda", "flash", FP8, 0)
    lora = forward_peak_bytes(cfg, shape, text, BF16, True, None, "cuda", "flash", FP8, 64)
    piece = 3072 * 3072 * 2  # the lean blocks upcast a weight a piece at a time (models/lean.py)
    assert fp8 > plain and lora > fp8, (plain, fp8, lora)
    assert 0.5 * piece <= fp8 - plain <= 2 * piece, (fp8 - plain) / piece  # a piece or two, never a whole matrix


@pytest.mark.parametrize("stored, rank", [(FP8, 0), (FP8, 8), (None, 8)])
def test_the_estimate_with_upcasts_and_lora_equals_a_real_run(stored, rank):
    """The estimate's temporaries are real: the same model on real CPU tensors allocates the same bytes."""
    cfg, shape, text = tiny_cfg(), (1, 16, 3, 16, 24), 20
    estimate = forward_peak_bytes(cfg, shape, text, FP32, True, 64, "cpu", "flash", stored, rank)
    with torch.device("meta"):
        model = HunyuanVideoDiT(cfg)
    model.lean, model.chunk_tokens = True, 64
    in_blocks = {id(m) for b in (*model.double_blocks, *model.single_blocks) for m in b.modules()}
    g = torch.Generator().manual_seed(0)
    params, extra = {}, []
    for n, p in model.named_parameters():
        owner = model.get_submodule(n.rpartition(".")[0])
        t = torch.randn(p.shape, generator=g) * 0.02
        params[n] = t.to(stored) if stored is not None and id(owner) in in_blocks and n.endswith(".weight") and p.dim() == 2 else t
    for n, m in model.named_modules():
        if isinstance(m, Linear):
            if stored is not None and id(m) in in_blocks:
                params[f"{n}.scale_weight"] = torch.tensor(1.0)
            if rank:
                m.lora = [LowRankAdapter(torch.randn(rank, m.in_features), torch.randn(m.out_features, rank), 0.1,
                                         None, "cpu", FP32)]
                extra += [m.lora[0].down, m.lora[0].up]
    inputs = {"x": torch.randn(shape), "timestep": torch.tensor([500.0]), "txt": torch.randn(1, text, 64),
              "pooled": torch.randn(1, 32), "guidance": torch.tensor([6000.0])}
    probe = LiveBytes(existing=[*params.values(), *extra, *inputs.values()])
    with attention_kernel("flash"), torch.no_grad(), probe:
        functional_call(model, params, (), inputs)
    assert abs(probe.peak - estimate) <= 0.01 * estimate, (probe.peak, estimate)
