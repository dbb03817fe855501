"""Prompt encoding matches diffusers' HunyuanVideoPipeline.encode_prompt, from every file layout, with
the LLaVA layers streamed; plus cache, memory counters and bad input."""

import copy
import logging
import os

import pytest
import torch

from hystream.errors import NotFoundError, UnsupportedVariantError, WrongModelError
from hystream.families.hunyuan_video.text import clear_prompt_cache
from hystream.loading import load_text_encoder
from hystream.models.llama_encoder import LAYER_PARTS
from tiny_text import reference_encode, save_clip, save_llama

SHORT = "A cat walks on the grass, realistic style."
LONG = ("A slow cinematic shot follows an old fisherman as he pulls a small wooden boat onto a pebble beach at dawn, "
        "gulls circling above, mist rolling over the grey sea, his yellow raincoat glistening, the camera tracking "
        "low beside the hull before rising to reveal the sleeping village on the cliffs behind him.")
LAYOUTS = ["comfy_fp16", "comfy_fp8_scaled", "xtuner_llava", "diffusers"]


@pytest.fixture(scope="module")
def world(tmp_path_factory, text_models):
    root = tmp_path_factory.mktemp("text")
    tok_dir, llama_tok, clip_tok, llama, clip = text_models
    files = {layout: save_llama(llama, layout, str(root / layout), tok_dir) for layout in LAYOUTS}
    clip_files = {layout: save_clip(clip, layout, str(root / ("clip_" + layout))) for layout in ("clip_l", "hf_folder")}
    return {"tok_dir": tok_dir, "llama_tok": llama_tok, "clip_tok": clip_tok, "llama": llama, "clip": clip,
            "files": files, "clip_files": clip_files, "root": root}


def reference(world, prompt, dequantised=None):
    llama = world["llama"]
    if dequantised is not None:
        llama = copy.deepcopy(llama)
        llama.load_state_dict(dequantised)
    return reference_encode(llama, world["clip"], world["llama_tok"], world["clip_tok"], prompt)


def encode(world, layout, prompt, clip_layout="clip_l", **kw):
    path, _ = world["files"][layout]
    te = load_text_encoder(path, world["clip_files"][clip_layout], tokenizer_dir=world["tok_dir"], **kw)
    try:
        return te.encode(prompt, use_cache=False), te.stats.as_dict(), te
    finally:
        te.close()


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("prompt", [SHORT, LONG], ids=["short", "long"])
def test_matches_diffusers_encode_prompt(world, layout, prompt):
    embeds, pooled, mask = reference(world, prompt, world["files"][layout][1])
    got, stats, _ = encode(world, layout, prompt)
    n = int(mask.sum())
    if prompt is LONG:
        assert n > 161  # longer than what a 256-tokens-including-template budget would keep
    assert torch.equal(mask[0, :n], torch.ones(n, dtype=mask.dtype)) and not mask[0, n:].any()
    assert got.states.shape == (1, n, embeds.shape[-1]) and torch.equal(got.mask, torch.ones(1, n, dtype=torch.long))
    # relative to the largest state: this tiny random Llama's states reach ~80, and float noise of another
    # summation order (transformers' attention vs ours) scales with them (seen: 1.6e-4)
    scale = max(1.0, embeds[:, :n].abs().max().item())
    assert (got.states - embeds[:, :n]).abs().max().item() <= 1e-5 * scale
    assert (got.pooled - pooled).abs().max().item() <= 1e-5
    assert embeds[:, :n].abs().max().item() > 0.5  # a real signal
    assert stats["copies"] == 3 * len(LAYER_PARTS)  # layers 0..N-3 only: N-2, N-1, the norm and the LM head are never read


def test_clip_from_hf_folder(world):
    _, pooled, _ = reference(world, SHORT)
    got, _, _ = encode(world, "comfy_fp16", SHORT, clip_layout="hf_folder")
    assert (got.pooled - pooled).abs().max().item() <= 1e-5


def test_over_long_prompt_is_truncated_with_a_warning(world, caplog):
    prompt = " ".join([LONG] * 3)
    embeds, _, mask = reference(world, prompt)
    with caplog.at_level(logging.WARNING, logger="hystream"):
        got, _, _ = encode(world, "comfy_fp16", prompt)
    assert got.states.shape[1] == 256 == int(mask.sum())
    assert (got.states - embeds).abs().max().item() <= 1e-5
    assert got.dropped_tokens > 0
    assert f"the last {got.dropped_tokens} tokens were dropped" in caplog.text


def test_streamed_equals_resident_and_ring_is_two_projections(world):
    streamed, s_stats, te = encode(world, "comfy_fp16", SHORT, vram_budget_gb=None)
    resident, r_stats, _ = encode(world, "comfy_fp16", SHORT, vram_budget_gb=1.0)  # CPU: everything fits
    assert r_stats["blocks_resident"] == 3 * len(LAYER_PARTS) and s_stats["blocks_resident"] == 0
    assert torch.equal(streamed.states, resident.states) and torch.equal(streamed.pooled, resident.pooled)
    units = [te.streamer.block_bytes(i) for i in range(te.streamer.block_count())]
    layer = sum(units[:len(LAYER_PARTS)])
    # the ring: two slots of the largest projection (a layer streams as its parts), far below two layers;
    # the embedding table never leaves the file
    assert s_stats["peak_device_bytes"] == 2 * max(units) < layer


def test_same_prompt_is_not_encoded_twice(world):
    clear_prompt_cache()
    path, _ = world["files"]["comfy_fp16"]
    te = load_text_encoder(path, world["clip_files"]["clip_l"], tokenizer_dir=world["tok_dir"])
    try:
        first = te.encode(SHORT)
        copies = te.stats.copies
        assert te.encode(SHORT) is first and te.stats.copies == copies
        te.encode(LONG)
        assert te.stats.copies == 2 * copies
    finally:
        te.close()
    te2 = load_text_encoder(path, world["clip_files"]["clip_l"], tokenizer_dir=world["tok_dir"])
    try:  # same files, new loader: still cached
        assert te2.encode(SHORT) is first and te2.stats.copies == 0
    finally:
        te2.close()


def test_tokenizer_found_beside_the_weights(world):
    path, _ = world["files"]["xtuner_llava"]  # tokenizer.json ships inside the folder
    te = load_text_encoder(path, world["clip_files"]["clip_l"],
                           host_tokenizer_dirs={"clip": world["tok_dir"]})  # CLIP's from the "host"
    te.close()


def test_missing_tokenizer_names_all_places(world, tmp_path):
    path, _ = world["files"]["comfy_fp16"]
    with pytest.raises(NotFoundError) as info:
        load_text_encoder(path, world["clip_files"]["clip_l"], tokenizer_dir=str(tmp_path),
                          host_tokenizer_dirs={"llama": str(tmp_path / "comfy_llama_tokenizer")})
    msg = str(info.value)
    assert "tokenizer.json" in msg and "the tokenizer_dir you gave" in msg and "beside the weights" in msg
    assert "bundled with ComfyUI" in msg and os.path.dirname(path) in msg


def test_dit_given_as_text_encoder(world, tmp_path, tiny_dit_sd):
    from tiny_dit import save_layout

    dit_path, _ = save_layout(tiny_dit_sd, "comfy", str(tmp_path))
    with pytest.raises(WrongModelError) as info:
        load_text_encoder(dit_path, world["clip_files"]["clip_l"], tokenizer_dir=world["tok_dir"])
    assert "HunyuanVideo transformer" in str(info.value) and "LLaVA-Llama-3" in str(info.value)


def test_llama_given_as_clip(world):
    path, _ = world["files"]["comfy_fp16"]
    with pytest.raises(WrongModelError) as info:
        load_text_encoder(path, path, tokenizer_dir=world["tok_dir"])
    assert "CLIP-L" in str(info.value) and "Llama" in str(info.value)


def test_llama_with_wrong_hidden_size(world, tmp_path):
    from safetensors.torch import save_file

    bad = {"model.embed_tokens.weight": torch.zeros(300, 200), "model.layers.0.self_attn.q_proj.weight": torch.zeros(200, 200),
           "model.layers.0.self_attn.k_proj.weight": torch.zeros(200, 200)}
    path = str(tmp_path / "llama_2000.safetensors")
    save_file(bad, path)
    with pytest.raises(UnsupportedVariantError) as info:
        load_text_encoder(path, world["clip_files"]["clip_l"], tokenizer_dir=world["tok_dir"])
    assert "hidden size 200" in str(info.value) and "head dim 128" in str(info.value)
