"""LoRA in every shared key format equals the hand-merged model (diffusers as the reference), stacks,
scales, works on fp8 and streamed weights, reports unmatched keys, and holds no second model copy."""

import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import save_file

from hystream.errors import InputError
from hystream.loaders.dit_loader import load_dit
from hystream.loaders.lora import attach_loras, load_lora
from tiny_dit import TINY, diffusers_model, dit_inputs, reference_forward, save_layout

# Tencent-named targets with their (out, in) sizes in the tiny model
H, M = TINY.hidden, TINY.mlp_hidden
TARGETS = {
    "double_blocks.0.img_attn_qkv": (3 * H, H),
    "double_blocks.1.txt_mlp.fc1": (M, H),
    "double_blocks.1.img_mod.linear": (6 * H, H),
    "single_blocks.0.linear1": (3 * H + M, H),
    "single_blocks.2.linear2": (H, H + M),
    "txt_in.individual_token_refiner.blocks.0.self_attn_qkv": (3 * H, H),
    "final_layer.linear": (TINY.out_channels * 4, H),
}
RANK = 4


def random_lora(seed=0, rank=RANK, targets=TARGETS):
    g = torch.Generator().manual_seed(seed)
    return {t: (torch.randn(rank, i, generator=g) * 0.2, torch.randn(o, rank, generator=g) * 0.2, 8.0)
            for t, (o, i) in targets.items()}


def write(parts, fmt, path):
    sd = {}
    for target, (down, up, alpha) in parts.items():
        if fmt == "comfy":
            base = "diffusion_model." + target
            sd.update({base + ".lora_down.weight": down, base + ".lora_up.weight": up, base + ".alpha": torch.tensor(alpha)})
        elif fmt == "kohya":
            base = "lora_unet_" + target.replace(".", "_")
            sd.update({base + ".lora_down.weight": down, base + ".lora_up.weight": up, base + ".alpha": torch.tensor(alpha)})
        elif fmt == "diffusion_pipe":  # PEFT keys, Tencent names, no alpha (= rank)
            base = "transformer." + target
            sd.update({base + ".lora_A.weight": down, base + ".lora_B.weight": up * (alpha / down.shape[0])})
    save_file(sd, str(path))
    return str(path)


def merged(base_sd, parts, strength=1.0):
    out = {k: v.clone() for k, v in base_sd.items()}
    for target, (down, up, alpha) in parts.items():
        out[target + ".weight"] += strength * (alpha / down.shape[0]) * (up @ down)
    return out


@pytest.fixture(scope="module")
def base(tmp_path_factory, tiny_dit_sd):
    return save_layout(tiny_dit_sd, "tencent", str(tmp_path_factory.mktemp("base")))[0]


def run(path, loras, inputs, **kw):
    dit = load_dit(path, **kw)
    try:
        with torch.no_grad(), attach_loras(dit.model, [(load_lora(p, dit.model), s) for p, s in loras]):
            return dit(**inputs)
    finally:
        dit.close()


@pytest.mark.parametrize("fmt", ["comfy", "kohya", "diffusion_pipe"])
def test_tencent_named_formats_equal_the_merged_model(tmp_path, base, tiny_dit_sd, fmt):
    parts = random_lora()
    path = write(parts, fmt, tmp_path / f"lora_{fmt}.safetensors")
    inputs = dit_inputs(2, valid=(8, 5))
    want = reference_forward(diffusers_model(merged(tiny_dit_sd, parts)), inputs)
    got = run(base, [(path, 1.0)], inputs)
    assert (got - want).abs().max().item() <= 1e-5
    assert (got - reference_forward(diffusers_model(tiny_dit_sd), inputs)).abs().max().item() > 1e-2  # it did something


def test_diffusers_peft_format_equals_merged_diffusers_model(tmp_path, base, tiny_dit_sd):
    """diffusers module names, including parts of fused Tencent projections (to_q, to_k of a joint
    attention; proj_mlp of a single block) and the swapped final norm, merged into diffusers' own model."""
    g = torch.Generator().manual_seed(1)
    modules = {"transformer_blocks.0.attn.to_q": (H, H), "transformer_blocks.0.attn.add_k_proj": (H, H),
               "transformer_blocks.1.ff.net.2": (H, M), "single_transformer_blocks.1.proj_mlp": (M, H),
               "single_transformer_blocks.0.attn.to_v": (H, H), "norm_out.linear": (2 * H, H),
               "context_embedder.token_refiner.refiner_blocks.1.attn.to_k": (H, H)}
    sd, deltas = {}, {}
    for name, (o, i) in modules.items():
        a, b = torch.randn(RANK, i, generator=g) * 0.2, torch.randn(o, RANK, generator=g) * 0.2
        sd[f"transformer.{name}.lora_A.weight"], sd[f"transformer.{name}.lora_B.weight"] = a, b
        deltas[name + ".weight"] = b @ a
    path = str(tmp_path / "pytorch_lora_weights.safetensors")
    save_file(sd, path)
    ref = diffusers_model(tiny_dit_sd)
    with torch.no_grad():
        params = dict(ref.named_parameters())
        for name, delta in deltas.items():
            params[name] += delta
    inputs = dit_inputs(1)
    assert (run(base, [(path, 1.0)], inputs) - reference_forward(ref, inputs)).abs().max().item() <= 1e-5


def test_strength_stacking_and_zero(tmp_path, base, tiny_dit_sd):
    a, b = random_lora(1), random_lora(2, targets={"double_blocks.0.img_attn_qkv": (3 * H, H), "single_blocks.1.linear1": (3 * H + M, H)})
    pa, pb = write(a, "comfy", tmp_path / "a.safetensors"), write(b, "kohya", tmp_path / "b.safetensors")
    inputs = dit_inputs(1)
    want = reference_forward(diffusers_model(merged(merged(tiny_dit_sd, a, 0.5), b, -0.7)), inputs)
    assert (run(base, [(pa, 0.5), (pb, -0.7)], inputs) - want).abs().max().item() <= 1e-5
    assert torch.equal(run(base, [(pa, 0.0)], inputs), run(base, [], inputs))


def test_fp8_and_streamed_weights(tmp_path, tiny_dit_sd):
    parts = random_lora(3)
    lora = write(parts, "comfy", tmp_path / "l.safetensors")
    path, deq = save_layout(tiny_dit_sd, "fp8_scaled", str(tmp_path / "fp8"))
    inputs = dit_inputs(1)
    want = reference_forward(diffusers_model(merged(deq, parts)), inputs)
    streamed = run(path, [(lora, 1.0)], inputs, prefetch_blocks=2)
    resident = run(path, [(lora, 1.0)], inputs, resident_blocks="all")
    assert torch.equal(streamed, resident)
    assert (streamed - want).abs().max().item() <= 1e-5


def test_unmatched_keys(tmp_path, base, caplog):
    dit = load_dit(base)
    try:
        flux = {"lora_unet_double_blocks_0_img_attn_qkv_x.lora_down.weight": torch.zeros(4, 8),
                "lora_unet_double_blocks_0_img_attn_qkv_x.lora_up.weight": torch.zeros(8, 4)}
        path = tmp_path / "flux_lora.safetensors"
        save_file(flux, str(path))
        with pytest.raises(InputError) as info:
            load_lora(str(path), dit.model)
        assert "none of 2 keys matched" in str(info.value) and "img_attn_qkv_x" in str(info.value)

        mixed = dict(flux)
        mixed.update({"diffusion_model.double_blocks.0.img_attn_proj.lora_down.weight": torch.zeros(4, H),
                      "diffusion_model.double_blocks.0.img_attn_proj.lora_up.weight": torch.zeros(H, 4)})
        save_file(mixed, str(path))
        with caplog.at_level(logging.WARNING, logger="hystream"):
            lora = load_lora(str(path), dit.model)
        assert len(lora.parts) == 1 and "2 of 4 keys" in caplog.text and "img_attn_qkv_x" in caplog.text

        wrong = {"diffusion_model.double_blocks.0.img_attn_proj.lora_down.weight": torch.zeros(4, 3072),
                 "diffusion_model.double_blocks.0.img_attn_proj.lora_up.weight": torch.zeros(3072, 4)}
        save_file(wrong, str(path))
        with pytest.raises(InputError, match="trained for another model"):
            load_lora(str(path), dit.model)
    finally:
        dit.close()


CHILD = textwrap.dedent("""
    import ctypes, gc, json, sys, torch
    from hystream.loaders.dit_loader import load_dit
    from hystream.loaders.lora import attach_loras, load_lora

    def hwm():
        return int(dict(l.split(":", 1) for l in open("/proc/self/status"))["VmHWM"].split()[0]) * 1024

    def reset():
        gc.collect(); ctypes.CDLL("libc.so.6").malloc_trim(0)
        open("/proc/self/clear_refs", "w").write("5")
        return int(dict(l.split(":", 1) for l in open("/proc/self/status"))["VmRSS"].split()[0]) * 1024

    torch.set_num_threads(1)
    dit = load_dit(sys.argv[1])
    x = dict(x=torch.randn(1, 16, 1, 4, 4), timestep=torch.tensor([500.0]), txt=torch.randn(1, 4, 64),
             pooled=torch.randn(1, 32), guidance=torch.tensor([6000.0]))
    with torch.no_grad():
        dit(**x)  # warm-up
        base = reset(); dit(**x); plain = hwm() - base
        lora = load_lora(sys.argv[2], dit.model)
        base = reset()
        with attach_loras(dit.model, [(lora, 1.0)]):
            dit(**x)
        with_lora = hwm() - base
    block = max(l.nbytes for l in dit.streamer.layouts)
    lora_bytes = sum(p.down.numel() * 4 + p.up.numel() * 4 for p in lora.parts)
    print(json.dumps(dict(plain=plain, with_lora=with_lora, block=block, lora=lora_bytes)))
""")


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc peak-RSS reset")
def test_lora_adds_no_host_copy_of_the_model(tmp_path):
    from test_lazy_loading import WIDE

    from tiny_dit import tencent_state_dict

    sd = {k: v.to(torch.bfloat16) for k, v in tencent_state_dict(WIDE).items()}
    path = tmp_path / "wide.safetensors"
    save_file(sd, str(path))
    with torch.device("meta"):
        from hystream.models.dit import HunyuanVideoDiT

        linears = {n: (m.out_features, m.in_features) for n, m in HunyuanVideoDiT(WIDE).named_modules()
                   if type(m).__name__ == "Linear" and "blocks." in n}
    lora = write(random_lora(4, rank=4, targets=linears), "comfy", tmp_path / "all_linears.safetensors")
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    result = subprocess.run([sys.executable, "-c", CHILD, str(path), lora], capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    m = json.loads(result.stdout.strip().splitlines()[-1])
    assert path.stat().st_size > 15 * m["block"]
    assert m["with_lora"] < m["plain"] + m["lora"] + 0.5 * m["block"], m  # the adapters, nothing like a model copy


def test_row_ranges_of_a_fused_weight_carry_their_part_of_the_delta():
    # The lean blocks take q, k, v and MLP rows of a fused weight separately: every row range must
    # equal the same rows of the whole merged weight, for adapters on the whole weight or on a part.
    from hystream.loaders.lora import Adapter, LoRAPart
    from hystream.models.layers import Linear

    torch.manual_seed(0)
    lin = Linear(8, 12)
    lin.weight = torch.nn.Parameter(torch.randn(12, 8).to(torch.bfloat16), requires_grad=False)
    lin.bias = torch.nn.Parameter(torch.randn(12), requires_grad=False)
    lin.lora = [Adapter(LoRAPart("x", torch.randn(2, 8), torch.randn(12, 2), 0.5, None), 1.0, "cpu", torch.float32),
                Adapter(LoRAPart("x", torch.randn(3, 8), torch.randn(4, 3), 1.0, (4, 8)), 0.7, "cpu", torch.float32)]
    whole = lin.compute_weight(torch.float32)
    assert not torch.equal(whole, lin.weight.float())
    for a, b in [(0, 4), (4, 8), (8, 12), (2, 6), (6, 11), (0, 12), (5, 6)]:
        torch.testing.assert_close(lin.compute_weight(torch.float32, (a, b)), whole[a:b], rtol=0, atol=1e-6)
        assert torch.equal(lin.compute_bias(torch.float32, (a, b)), lin.bias[a:b])
