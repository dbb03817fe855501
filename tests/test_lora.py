"""LoRA in every shared key format equals the hand-merged model (diffusers as the reference), stacks,
scales, works on fp8 and streamed weights, reports unmatched keys, and holds no second model copy."""

import logging

import pytest
import torch
from safetensors.torch import save_file

from hystream.errors import InputError, WrongModelError
from hystream.loaders.lora import attach_loras, load_lora
from hystream.loading import load_dit
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
    assert (got - want).abs().max().item() <= 1e-5 * max(1.0, want.abs().max().item())  # fp32 noise scales with |v|
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


def kohya_flux_lora(hidden, mlp, rank=4, doubles=19, singles=38, only=None):
    """A LoRA with the keys kohya's sd-scripts writes for Flux.1 (lora_unet_double_blocks_N_img_attn_qkv,
    _img_mlp_0, _img_mod_lin, lora_unet_single_blocks_N_linear1, _modulation_lin, ...), shaped for a DiT of
    `hidden` width so the shared names also fit in shape (as full-size Flux fits full-size HunyuanVideo)."""
    g = torch.Generator().manual_seed(3)
    modules = {}
    for n in range(doubles):
        for side in ("img", "txt"):
            modules.update({f"double_blocks_{n}_{side}_attn_qkv": (3 * hidden, hidden),
                            f"double_blocks_{n}_{side}_attn_proj": (hidden, hidden),
                            f"double_blocks_{n}_{side}_mlp_0": (mlp, hidden), f"double_blocks_{n}_{side}_mlp_2": (hidden, mlp),
                            f"double_blocks_{n}_{side}_mod_lin": (6 * hidden, hidden)})
    for n in range(singles):
        modules.update({f"single_blocks_{n}_linear1": (3 * hidden + mlp, hidden),
                        f"single_blocks_{n}_linear2": (hidden, hidden + mlp),
                        f"single_blocks_{n}_modulation_lin": (3 * hidden, hidden)})
    sd = {}
    for name, (out, inp) in modules.items():
        if only and not any(o in name for o in only):
            continue
        base = "lora_unet_" + name
        sd.update({base + ".lora_down.weight": torch.randn(rank, inp, generator=g) * 0.01,
                   base + ".lora_up.weight": torch.randn(out, rank, generator=g) * 0.01,
                   base + ".alpha": torch.tensor(float(rank))})
    return sd


def diffusers_flux_lora(hidden, rank=4):
    """diffusers/PEFT Flux keys (transformer.transformer_blocks.N.attn.to_q ...): the same module names as
    HunyuanVideo's diffusers names, 19 + 38 blocks deep."""
    sd = {}
    for n in range(19):
        for m in ("attn.to_q", "attn.to_k", "attn.to_v", "attn.add_q_proj"):
            sd[f"transformer.transformer_blocks.{n}.{m}.lora_A.weight"] = torch.zeros(rank, hidden)
            sd[f"transformer.transformer_blocks.{n}.{m}.lora_B.weight"] = torch.zeros(hidden, rank)
    for n in range(38):
        for m in ("attn.to_q", "attn.to_k", "attn.to_v"):
            sd[f"transformer.single_transformer_blocks.{n}.{m}.lora_A.weight"] = torch.zeros(rank, hidden)
            sd[f"transformer.single_transformer_blocks.{n}.{m}.lora_B.weight"] = torch.zeros(hidden, rank)
    return sd


FOREIGN = {
    "flux_kohya": ("Flux", lambda: kohya_flux_lora(H, M)),
    "flux_kohya_mlp_only": ("Flux", lambda: kohya_flux_lora(H, M, doubles=2, singles=0, only=["mlp_0", "mlp_2"])),
    "flux_kohya_attention_only": ("Flux", lambda: kohya_flux_lora(H, M, only=["attn_qkv", "attn_proj", "linear1", "linear2"])),
    "flux_diffusers": ("Flux", lambda: diffusers_flux_lora(H)),
    "sdxl": ("Stable Diffusion", lambda: {
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight": torch.zeros(4, 8),
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight": torch.zeros(8, 4),
        "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(4, 8),
        "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": torch.zeros(8, 4)}),
    "wan": ("Wan", lambda: {
        "diffusion_model.blocks.0.self_attn.q.lora_down.weight": torch.zeros(4, H),
        "diffusion_model.blocks.0.self_attn.q.lora_up.weight": torch.zeros(H, 4),
        "diffusion_model.blocks.0.ffn.0.lora_down.weight": torch.zeros(4, H),
        "diffusion_model.blocks.0.ffn.0.lora_up.weight": torch.zeros(M, 4)}),
}


@pytest.mark.parametrize("kind", sorted(FOREIGN))
def test_a_lora_of_another_model_is_refused(tmp_path, base, kind):
    """Another family's LoRA is refused by name, even where most of its keys (and shapes) would apply."""
    family, make = FOREIGN[kind]
    dit = load_dit(base)
    try:
        path = tmp_path / f"{kind}.safetensors"
        save_file(make(), str(path))
        with pytest.raises(WrongModelError) as info:
            load_lora(str(path), dit.model)
        text = str(info.value)
        assert family in text and "HunyuanVideo" in text and "What to do" in text, text
    finally:
        dit.close()


def test_partial_match_is_reported_with_counts(tmp_path, base, caplog):
    dit = load_dit(base)
    try:
        keys = {"diffusion_model.double_blocks.0.img_attn_proj.lora_down.weight": torch.zeros(4, H),
                "diffusion_model.double_blocks.0.img_attn_proj.lora_up.weight": torch.zeros(H, 4),
                "diffusion_model.double_blocks.7.img_attn_proj.lora_down.weight": torch.zeros(4, H),  # no block 7
                "diffusion_model.double_blocks.7.img_attn_proj.lora_up.weight": torch.zeros(H, 4),
                "diffusion_model.double_blocks.0.img_attn_proj.dora_scale": torch.zeros(H)}
        path = tmp_path / "partial.safetensors"
        save_file(keys, str(path))
        with caplog.at_level(logging.WARNING, logger="hystream"):
            lora = load_lora(str(path), dit.model)
        assert len(lora.parts) == 1 and lora.tensors == 5 and lora.applied_tensors == 2
        summary = lora.summary()
        assert "PARTLY applied" in summary and "2 of 5 tensors" in summary and "3 not applied" in summary
        assert "double_blocks.7" in summary and summary in caplog.text

        full = write(random_lora(1), "comfy", tmp_path / "full.safetensors")
        assert load_lora(full, dit.model).summary().startswith(f"LoRA full.safetensors: all {3 * len(TARGETS)} tensors")

        save_file({"lora_unet_double_blocks_0_img_attn_qkv_x.lora_down.weight": torch.zeros(4, 8),
                   "lora_unet_double_blocks_0_img_attn_qkv_x.lora_up.weight": torch.zeros(8, 4)}, str(path))
        with pytest.raises(InputError, match="none of 2 keys matched"):
            load_lora(str(path), dit.model)

        wrong = {"diffusion_model.double_blocks.0.img_attn_proj.lora_down.weight": torch.zeros(4, 3072),
                 "diffusion_model.double_blocks.0.img_attn_proj.lora_up.weight": torch.zeros(3072, 4)}
        save_file(wrong, str(path))
        with pytest.raises(InputError, match="trained for another model"):
            load_lora(str(path), dit.model)
    finally:
        dit.close()


def test_row_ranges_of_a_fused_weight_carry_their_part_of_the_delta():
    # The lean blocks take q, k, v and MLP rows of a fused weight separately: every row range must
    # equal the same rows of the whole merged weight, for adapters on the whole weight or on a part.
    from hystream.models.layers import Linear, LowRankAdapter

    torch.manual_seed(0)
    lin = Linear(8, 12)
    lin.weight = torch.nn.Parameter(torch.randn(12, 8).to(torch.bfloat16), requires_grad=False)
    lin.bias = torch.nn.Parameter(torch.randn(12), requires_grad=False)
    lin.lora = [LowRankAdapter(torch.randn(2, 8), torch.randn(12, 2), 0.5, None, "cpu", torch.float32),
                LowRankAdapter(torch.randn(3, 8), torch.randn(4, 3), 0.7, (4, 8), "cpu", torch.float32)]
    whole = lin.compute_weight(torch.float32)
    assert not torch.equal(whole, lin.weight.float())
    for a, b in [(0, 4), (4, 8), (8, 12), (2, 6), (6, 11), (0, 12), (5, 6)]:
        torch.testing.assert_close(lin.compute_weight(torch.float32, (a, b)), whole[a:b], rtol=0, atol=1e-6)
        assert torch.equal(lin.compute_bias(torch.float32, (a, b)), lin.bias[a:b])
