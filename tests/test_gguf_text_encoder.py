"""A LLaVA-Llama-3 GGUF in llama.cpp's layout (blk.N.attn_q…, q/k rows permuted for its RoPE, quantised
Linears, a Q8_0 embedding table) encodes prompts as diffusers does with the dequantised weights; its
layers stream as quantised bytes; a broken one is refused clearly."""

from pathlib import Path

import pytest
import torch

from hystream.errors import CorruptFileError, StateDictError, WrongModelError
from hystream.loaders.recipes import unpermute_rows
from hystream.loading import load_text_encoder
from hystream.models.llama_encoder import LAYER_PARTS
from test_text_encoder import LONG, SHORT
from tiny_gguf import LLAMA_CPP, llama_cpp_permute, llama_cpp_tensors, twin, write_gguf
from tiny_text import reference_encode, save_clip

HEADS, KV_HEADS = 4, 2


@pytest.fixture(scope="module")
def world(tmp_path_factory, text_models):
    root = tmp_path_factory.mktemp("gguf_text")
    tok_dir, llama_tok, clip_tok, llama, clip = text_models
    hf = {k: v.detach().clone() for k, v in llama.state_dict().items()}
    files = {}
    for qtype in ("Q8_0", "Q4_K", "Q6_K"):
        tensors = llama_cpp_tensors(hf, HEADS, KV_HEADS, qtype)
        files[qtype] = (write_gguf(str(root / f"llava-llama-3-8b-v1_1-{qtype}.gguf"), tensors, arch="llama"),
                        _hf_twin(tensors))
    return {"tok_dir": tok_dir, "llama_tok": llama_tok, "clip_tok": clip_tok, "llama": llama, "clip": clip,
            "files": files, "clip_path": save_clip(clip, "clip_l", str(root / "clip")), "root": root}


def _hf_twin(tensors):
    """The dequantised GGUF in Hugging Face's names and row order: what diffusers should run."""
    back = {v: k for k, v in LLAMA_CPP.items()}
    out = {}
    for name, t in twin(tensors).items():
        if name == "token_embd.weight":
            out["embed_tokens.weight"] = t
        elif name == "output_norm.weight":
            out["norm.weight"] = t
        else:
            _, n, base, kind = name.split(".")
            if base in ("attn_q", "attn_k"):
                t = unpermute_rows(t, HEADS if base == "attn_q" else KV_HEADS)
            out[f"layers.{n}.{back[base]}.{kind}"] = t
    return out


def test_unpermute_undoes_llama_cpp_permute():
    w = torch.randn(4 * 128, 64)
    assert torch.equal(unpermute_rows(llama_cpp_permute(w, 4), 4), w)
    assert not torch.equal(llama_cpp_permute(w, 4), w)


def reference(world, prompt, state):
    import copy

    llama = copy.deepcopy(world["llama"])
    llama.load_state_dict(state)
    return reference_encode(llama, world["clip"], world["llama_tok"], world["clip_tok"], prompt)


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_K", "Q6_K"])
@pytest.mark.parametrize("prompt", [SHORT, LONG], ids=["short", "long"])
def test_matches_diffusers_with_the_dequantised_weights(world, qtype, prompt):
    path, state = world["files"][qtype]
    embeds, pooled, mask = reference(world, prompt, state)
    te = load_text_encoder(path, world["clip_path"], tokenizer_dir=world["tok_dir"])
    try:
        got = te.encode(prompt, use_cache=False)
        stats = te.stats.as_dict()
        layers = [m for layer in te.encoder.llama.layers for m in layer.modules() if getattr(m, "quant", None)]
    finally:
        te.close()
    n = int(mask.sum())
    assert got.states.shape == (1, n, embeds.shape[-1])
    # relative to the largest state: this tiny random Llama amplifies its activations (to ~1e6 for Q4_K),
    # so float noise of a different summation order scales with them (seen: 1.6e-4 on values of 81)
    scale = max(1.0, embeds[:, :n].abs().max().item())
    assert (got.states - embeds[:, :n]).abs().max().item() <= 1e-5 * scale
    assert (got.pooled - pooled).abs().max().item() <= 1e-5
    assert embeds[:, :n].abs().max().item() > 0.5
    assert layers and {m.quant.name for m in layers} == {qtype}  # kept quantised, decoded at use
    assert stats["copies"] == 3 * len(LAYER_PARTS)  # 3 layers, each as its parts


def test_a_wrong_permutation_would_be_seen(world):
    """Guard on the test itself: loading the GGUF's q/k rows without undoing llama.cpp's permutation
    gives a different encoding, so the parity above checks the un-permutation."""
    _, state = world["files"]["Q8_0"]
    scrambled = dict(state)
    for k, v in scrambled.items():
        if k.endswith(("q_proj.weight", "k_proj.weight")):
            scrambled[k] = llama_cpp_permute(v, HEADS if "q_proj" in k else KV_HEADS)
    good, _, _ = reference(world, SHORT, state)
    bad, _, _ = reference(world, SHORT, scrambled)
    assert (good - bad).abs().max().item() > 1e-2


def test_truncated_gguf_text_encoder(world, tmp_path):
    path, _ = world["files"]["Q4_K"]
    data = Path(path).read_bytes()
    cut = tmp_path / "llava-cut.gguf"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFileError, match="download"):
        load_text_encoder(str(cut), world["clip_path"], tokenizer_dir=world["tok_dir"])


def test_dit_gguf_given_as_text_encoder(world, tmp_path, tiny_dit_sd):
    from tiny_gguf import dit_types

    path = write_gguf(str(tmp_path / "hunyuan-video-Q4_K_M.gguf"), dit_types(tiny_dit_sd))
    with pytest.raises(WrongModelError) as info:
        load_text_encoder(path, world["clip_path"], tokenizer_dir=world["tok_dir"])
    assert "HunyuanVideo transformer" in str(info.value) and "LLaVA-Llama-3" in str(info.value)


def test_gguf_with_layers_missing_is_named(world, tmp_path):
    hf = {k: v.detach().clone() for k, v in world["llama"].state_dict().items()}
    tensors = llama_cpp_tensors(hf, HEADS, KV_HEADS, "Q8_0")
    del tensors["blk.1.ffn_down.weight"]
    path = write_gguf(str(tmp_path / "llava-missing.gguf"), tensors, arch="llama")
    with pytest.raises(StateDictError) as info:
        load_text_encoder(path, world["clip_path"], tokenizer_dir=world["tok_dir"])
    assert "1 missing tensors (layers.1.mlp.down_proj.weight)" in str(info.value), str(info.value)
