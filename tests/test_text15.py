"""HunyuanVideo 1.5's text stack: prompt states and glyph states equal diffusers'
`HunyuanVideo15Pipeline.encode_prompt` (tiny random Qwen2_5_VLTextModel + T5EncoderModel, the REAL Qwen2.5
and ByT5 tokenizers ComfyUI ships) from every file layout, with Qwen's layers streamed; the template's crop;
Qwen2.5-VL's RoPE vs Qwen2's; the CONDITIONING format; wrong files."""

from __future__ import annotations

import copy
import functools
import itertools
import json
import logging
import os
import re
import unicodedata
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from hystream.errors import InputError, NotFoundError, StateDictError, UnsupportedVariantError, WrongModelError
from hystream.families.hunyuan_video_15 import demo_text
from hystream.families.hunyuan_video_15.conditioning import read_conditioning, to_conditioning, with_start_image
from hystream.families.hunyuan_video_15.prompt import SYSTEM_MESSAGE, chat, glyph_text, template_crop, template_tokens
from hystream.families.hunyuan_video_15.text import clear_prompt_cache
from hystream.families.hunyuan_video_15.text_loader import QWEN25, claims_text_encoder, load_text_encoder
from hystream.models.llama_encoder import LAYER_PARTS

SHORT = "A cat walks on the grass, realistic style."
QUOTED = 'A shop sign reads "OPEN 24/7", a poster says “Café Noir”, and a second sign also reads "OPEN 24/7".'
EMPTY = ""
LAYOUTS = [*demo_text.QWEN_LAYOUTS, "gguf"]
CLOSING = [151645, 198, 151644, 77091, 198]  # <|im_end|> \n <|im_start|> assistant \n (the real tokenizer)
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
               r"|\s+(?!\S)|\s+")  # Qwen2's pre-tokenizer split (its tokenizer.json)


class StandInVAE:  # the pipeline's constructor reads these; encode_prompt never touches the VAE
    config = SimpleNamespace(latent_channels=32)
    temporal_compression_ratio = 4
    spatial_compression_ratio = 16


def qwen_gguf(sd: dict, path: str) -> dict:
    """A llama.cpp `qwen2vl` GGUF of a Qwen2_5_VLTextModel state (Q8_0 matrices and table, F32 norms and
    biases; q/k rows as stored: llama.cpp permutes only Llama's). Returns its dequantised twin in HF names."""
    from tiny_gguf import LLAMA_CPP, twin, write_gguf

    tensors, back = {}, {}
    for name, t in sd.items():
        if name == "embed_tokens.weight":
            gname = "token_embd.weight"
        elif name == "norm.weight":
            gname = "output_norm.weight"
        else:
            m = re.match(r"layers\.(\d+)\.(.+)\.(weight|bias)$", name)
            gname = f"blk.{m.group(1)}.{LLAMA_CPP[m.group(2)]}.{m.group(3)}"
        tensors[gname] = (t, "F32" if t.dim() == 1 else "Q8_0")
        back[gname] = name
    write_gguf(path, tensors, arch="qwen2vl")
    return {back[k]: v for k, v in twin(tensors).items()}


@pytest.fixture(scope="module")
def world(tmp_path_factory, comfy_snapshot):
    from transformers import ByT5Tokenizer, Qwen2Tokenizer

    bundled = os.path.join(comfy_snapshot, "comfy", "text_encoders")
    qwen_dir, byt5_dir = os.path.join(bundled, "qwen25_tokenizer"), os.path.join(bundled, "byt5_tokenizer")
    if not os.path.isdir(qwen_dir) or not os.path.isdir(byt5_dir):
        reason = f"the ComfyUI at {comfy_snapshot} ships no qwen25_tokenizer / byt5_tokenizer (0.3.6x does)"
        if os.environ.get("HYSTREAM_REQUIRE_HOST") or os.environ.get("CI"):
            pytest.fail(reason + " (HYSTREAM_REQUIRE_HOST is set)")
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("text15")
    qwen, byt5 = demo_text.qwen_model(), demo_text.byt5_model()
    files = {layout: demo_text.write_qwen(qwen, layout, str(root / layout), qwen_dir) for layout in demo_text.QWEN_LAYOUTS}
    gguf_path = str(root / "Qwen2.5-VL-7B-Instruct-Q8_0.gguf")
    files["gguf"] = (gguf_path, qwen_gguf({k: v.detach() for k, v in qwen.state_dict().items()}, gguf_path))
    byt5_files = {layout: demo_text.write_byt5(byt5, layout, str(root / f"byt5_{layout}"), byt5_dir)
                  for layout in demo_text.BYT5_LAYOUTS}
    return SimpleNamespace(root=root, qwen=qwen, byt5=byt5, qwen_dir=qwen_dir, byt5_dir=byt5_dir,
                           host={"qwen25": qwen_dir, "byt5": byt5_dir}, files=files, byt5_files=byt5_files,
                           qwen_tok=Qwen2Tokenizer.from_pretrained(qwen_dir), byt5_tok=ByT5Tokenizer.from_pretrained(byt5_dir))


def pipeline(world, qwen, tokenizer=None):
    from diffusers import FlowMatchEulerDiscreteScheduler, HunyuanVideo15Pipeline
    from diffusers.guiders import ClassifierFreeGuidance

    return HunyuanVideo15Pipeline(text_encoder=qwen, tokenizer=tokenizer or world.qwen_tok, transformer=None,
                                  vae=StandInVAE(), scheduler=FlowMatchEulerDiscreteScheduler(), text_encoder_2=world.byt5,
                                  tokenizer_2=world.byt5_tok, guider=ClassifierFreeGuidance())


def _with_state(model, state):
    if state is None:
        return model
    model = copy.deepcopy(model)
    model.load_state_dict(state, strict=False)  # norms and biases of an fp8 file: as in the model
    return model


@functools.lru_cache(maxsize=16)
def _reference(world_id: int, layout: str, prompt: str):
    world = _WORLDS[world_id]
    pipe = pipeline(world, _with_state(world.qwen, world.files[layout][1]))
    with torch.no_grad():
        return pipe.encode_prompt(prompt, device=torch.device("cpu"), dtype=torch.float32)


_WORLDS: dict[int, SimpleNamespace] = {}


def reference(world, layout: str, prompt: str):
    """diffusers' encode_prompt on the model the file holds: (states, mask, glyph, glyph mask), padded."""
    _WORLDS[id(world)] = world
    return _reference(id(world), layout, prompt)


def encode(world, layout="comfy_fp16", prompt=SHORT, byt5_layout="comfy", **kw):
    kw.setdefault("host_tokenizer_dirs", world.host)
    te = load_text_encoder(world.files[layout][0], world.byt5_files[byt5_layout], **kw)
    try:
        return te.encode(prompt, use_cache=False), te.stats.as_dict(), te
    finally:
        te.close()


def assert_close(got, want, what):
    # relative to the largest state: float noise of another summation order (padding, attention kernels)
    # scales with the states, which reach ~30 in these random models
    scale = max(1.0, want.abs().max().item())
    err = (got - want).abs().max().item()
    assert err <= 1e-5 * scale, f"{what}: max error {err:.3g} vs scale {scale:.3g}"
    assert want.abs().max().item() > 0.5  # a real signal


def check_against_reference(got, ref, prompt):
    states, mask, glyph, glyph_mask = ref
    n = int(mask.sum())
    assert torch.equal(mask[0, :n], torch.ones(n)) and not mask[0, n:].any()
    assert got.states.shape == (1, n, states.shape[-1]) and torch.equal(got.mask, torch.ones(1, n, dtype=torch.long))
    assert_close(got.states, states[:, :n], "prompt states")
    m = int(glyph_mask.sum())
    if glyph_text(prompt) is None:
        assert got.glyph is None and m == 0 and not glyph.any()  # the reference's zeros, masked out
    else:
        assert got.glyph.shape == (1, m, glyph.shape[-1]) and torch.equal(glyph_mask[0, :m], torch.ones(m))
        assert_close(got.glyph, glyph[:, :m], "glyph states")


# -- the template ---------------------------------------------------------------------------------------------
def test_system_message_and_crop_are_diffusers(world):
    pipe = pipeline(world, world.qwen)
    assert SYSTEM_MESSAGE == pipe.system_message  # byte for byte, runs of spaces included
    assert "aspects:         1. The main" in SYSTEM_MESSAGE
    assert template_crop(world.qwen_tok) == 108 == pipe.prompt_template_encode_start_idx
    tokens = template_tokens(SHORT, world.qwen_tok)
    assert tokens.ids[-5:] == CLOSING and tokens.crop == 108
    diffusers_ids = world.qwen_tok.apply_chat_template(chat(SHORT), add_generation_prompt=True, tokenize=True)["input_ids"]
    assert tokens.ids == list(diffusers_ids)


def _independent_bpe(folder: str):
    """Byte-level BPE written out (GPT-2's byte map, Qwen2's split pattern, NFC, merges by rank), to check
    that the tokenizer transformers builds from vocab.json + merges.txt gives the real Qwen2.5 ids."""
    import regex

    with open(os.path.join(folder, "vocab.json"), encoding="utf-8") as f:
        vocab = json.load(f)
    with open(os.path.join(folder, "merges.txt"), encoding="utf-8") as f:
        ranks = {tuple(line.split()): i for i, line in enumerate(f.read().splitlines()[1:]) if line}
    visible = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    chars = visible + [256 + i for i in range(256 - len(visible))]
    byte_map = dict(zip(visible + [b for b in range(256) if b not in visible], [chr(c) for c in chars]))
    specials = {"<|im_start|>": 151644, "<|im_end|>": 151645, "<|endoftext|>": 151643}

    def bpe(piece: str) -> list[int]:
        word = [byte_map[b] for b in piece.encode("utf-8")]
        while len(word) > 1:
            pairs = [(ranks.get(p, 1 << 30), i) for i, p in enumerate(itertools.pairwise(word))]
            rank, i = min(pairs)
            if rank == 1 << 30:
                break
            word[i:i + 2] = [word[i] + word[i + 1]]
        return [vocab[w] for w in word]

    def encode(text: str) -> list[int]:
        ids = []
        for part in re.split("(" + "|".join(map(re.escape, specials)) + ")", text):
            if part in specials:
                ids.append(specials[part])
            elif part:
                for piece in regex.findall(QWEN2_SPLIT, unicodedata.normalize("NFC", part)):
                    ids += bpe(piece)
        return ids
    return encode


def test_template_ids_equal_an_independent_bpe(world):
    encode = _independent_bpe(world.qwen_dir)
    for prompt in (SHORT, QUOTED, "Ein Hund läuft über die Brücke — 2 Katzen!\n\nUnd 1234 Äpfel.", " "):
        rendered = world.qwen_tok.apply_chat_template(chat(prompt), add_generation_prompt=True, tokenize=False)
        assert template_tokens(prompt, world.qwen_tok).ids == encode(rendered)
    head = world.qwen_tok.apply_chat_template(chat("X"), add_generation_prompt=True, tokenize=False).split("X")[0]
    assert len(encode(head)) == 108


def test_crop_is_measured_not_fixed(world, tmp_path):
    """Another tokenizer, another crop: the states still equal the reference given that crop."""
    from transformers import Qwen2Tokenizer

    tok = Qwen2Tokenizer.from_pretrained(demo_text.write_tiny_qwen_tokenizer(str(tmp_path / "tok")))
    crop = template_crop(tok)
    head = tok.apply_chat_template(chat("X"), add_generation_prompt=True, tokenize=False).split("X")[0]
    assert head.endswith("<|im_start|>user\n") and crop == len(tok(head)["input_ids"]) != 108
    qwen = demo_text.qwen_model(vocab=len(tok))
    path, _ = demo_text.write_qwen(qwen, "comfy_fp16", str(tmp_path / "m"))
    pipe = pipeline(world, qwen, tok)
    pipe.prompt_template_encode_start_idx = crop
    with torch.no_grad():
        ref = pipe.encode_prompt(QUOTED, device=torch.device("cpu"), dtype=torch.float32)
    te = load_text_encoder(path, world.byt5_files["comfy"], tokenizer_dir=str(tmp_path / "tok"),
                           host_tokenizer_dirs=world.host)
    try:
        check_against_reference(te.encode(QUOTED, use_cache=False), ref, QUOTED)
    finally:
        te.close()


def test_glyph_text_is_diffusers():
    from diffusers.pipelines.hunyuan_video1_5.pipeline_hunyuan_video1_5 import extract_glyph_texts

    for prompt in (SHORT, QUOTED, 'one "A"', '"A" and "A"', '“x” "y" “x”', 'half "open', "‘single’ only", ""):
        assert glyph_text(prompt) == extract_glyph_texts(prompt), prompt
    assert glyph_text(QUOTED) == 'Text "OPEN 24/7". Text "Café Noir". '


# -- parity with diffusers ------------------------------------------------------------------------------------
LONG_QUOTE = 'A banner reads "' + "HyStream streams every block ahead of the compute. " * 7 + '" in red letters.'


@pytest.mark.parametrize("prompt", [SHORT, QUOTED, EMPTY, LONG_QUOTE], ids=["short", "quoted", "empty", "long_quote"])
def test_matches_diffusers_encode_prompt(world, prompt):
    got, stats, _ = encode(world, "comfy_fp16", prompt)
    check_against_reference(got, reference(world, "comfy_fp16", prompt), prompt)
    assert stats["copies"] == 3 * len(LAYER_PARTS)  # layers 0..N-3 only: N-2, N-1, the norm, lm_head and the vision tower never read


@pytest.mark.parametrize("layout", [x for x in LAYOUTS if x != "comfy_fp16"])
def test_every_layout_matches_diffusers(world, layout):
    got, _, _ = encode(world, layout, QUOTED)
    check_against_reference(got, reference(world, layout, QUOTED), QUOTED)


def test_byt5_from_a_diffusers_folder(world):
    got, _, _ = encode(world, "diffusers", QUOTED, byt5_layout="diffusers")
    check_against_reference(got, reference(world, "comfy_fp16", QUOTED), QUOTED)


def test_fp8_scaled_equals_its_dequantised_model(world):
    """The fp8 file runs, equals the dequantised model (above), and is not the fp16 one."""
    fp8, _, _ = encode(world, "comfy_fp8_scaled", SHORT)
    fp16, _, _ = encode(world, "comfy_fp16", SHORT)
    assert (fp8.states - fp16.states).abs().max() > 1e-3


def test_over_long_prompt_is_truncated_with_a_warning(world, caplog):
    prompt = " ".join(["A slow cinematic shot of gulls over a grey sea at dawn, mist rolling in."] * 80)
    with caplog.at_level(logging.WARNING, logger="hystream"):
        got, _, _ = encode(world, "comfy_fp16", prompt)
    states, mask, _, _ = reference(world, "comfy_fp16", prompt)
    assert got.states.shape[1] == 1000 == int(mask.sum()) and got.dropped_tokens > 0
    assert_close(got.states, states, "truncated prompt states")
    assert f"the last {got.dropped_tokens} tokens were dropped" in caplog.text


def test_layer_n_minus_1_would_be_caught(world):
    """The check above tells hidden_states[-3] from [-2]: the states of one layer more are far outside it."""
    from diffusers import HunyuanVideo15Pipeline

    got, _, _ = encode(world, "comfy_fp16", SHORT)
    with torch.no_grad():
        wrong, mask = HunyuanVideo15Pipeline._get_mllm_prompt_embeds(world.qwen, world.qwen_tok, SHORT, "cpu",
                                                                      num_hidden_layers_to_skip=1)
    n = int(mask.sum())
    assert (got.states - wrong[:, :n]).abs().max() > 1e-2 * wrong.abs().max()


def test_qwen25vl_rope_is_qwen2_rope_for_text(world):
    """Qwen2.5-VL's multimodal RoPE gives each section the same angles when every position is a text position,
    so transformers' Qwen2Model with the same weights gives bit-identical states (what HyStream streams)."""
    import transformers

    cfg = world.qwen.config
    q2 = transformers.Qwen2Config(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
                                  intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.num_hidden_layers,
                                  num_attention_heads=cfg.num_attention_heads, num_key_value_heads=cfg.num_key_value_heads,
                                  rms_norm_eps=cfg.rms_norm_eps, rope_theta=1e6, head_dim=128)
    qwen2 = transformers.Qwen2Model(q2).eval()
    qwen2.load_state_dict(world.qwen.state_dict(), strict=True)
    ids = torch.tensor([template_tokens(QUOTED, world.qwen_tok).ids])
    with torch.no_grad():
        a = world.qwen(input_ids=ids, output_hidden_states=True).hidden_states
        b = qwen2(input_ids=ids, output_hidden_states=True).hidden_states
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_streamed_equals_resident_and_ring_is_two_projections(world):
    streamed, s_stats, te = encode(world, "comfy_fp16", QUOTED, vram_budget_gb=None)
    resident, r_stats, _ = encode(world, "comfy_fp16", QUOTED, vram_budget_gb=1.0)  # CPU: everything fits
    assert r_stats["blocks_resident"] == 3 * len(LAYER_PARTS) and s_stats["blocks_resident"] == 0
    assert torch.equal(streamed.states, resident.states) and torch.equal(streamed.glyph, resident.glyph)
    units = [te.streamer.block_bytes(i) for i in range(te.streamer.block_count())]
    # two slots of the largest projection (layers stream as their parts); the table never leaves the file
    assert s_stats["peak_device_bytes"] == 2 * max(units) < sum(units[:len(LAYER_PARTS)])


def test_same_prompt_is_not_encoded_twice(world):
    clear_prompt_cache()
    te = load_text_encoder(world.files["comfy_fp16"][0], world.byt5_files["comfy"], host_tokenizer_dirs=world.host)
    try:
        first = te.encode(SHORT)
        copies = te.stats.copies
        assert te.encode(SHORT) is first and te.stats.copies == copies
        te.encode(QUOTED)
        assert te.stats.copies == 2 * copies
    finally:
        te.close()


# -- CONDITIONING ---------------------------------------------------------------------------------------------
def test_conditioning_is_the_native_format(world):
    te = load_text_encoder(world.files["comfy_fp16"][0], world.byt5_files["comfy"], host_tokenizer_dirs=world.host)
    try:
        plain, quoted = te.conditioning(SHORT), te.conditioning(QUOTED)
    finally:
        te.close()
    assert len(plain) == 1 and set(plain[0][1]) == {"attention_mask"}  # no quotes: no glyph key, no pooled vector
    states, extra = quoted[0]
    assert states.shape[-1] == demo_text.QWEN_HIDDEN and extra["conditioning_byt5small"].shape[-1] == demo_text.BYT5_WIDTH
    cond = read_conditioning(quoted, text_dim=demo_text.QWEN_HIDDEN, glyph_dim=demo_text.BYT5_WIDTH)
    assert cond.states is states and cond.glyph is extra["conditioning_byt5small"] and cond.start_image is None


def test_read_conditioning_accepts_native_and_refuses_hunyuan_video_10():
    native = [[torch.randn(1, 7, 3584), {"pooled_output": None, "conditioning_byt5small": torch.randn(1, 9, 1472)}]]
    cond = read_conditioning(native)
    assert cond.mask is None and cond.glyph.shape == (1, 9, 1472)
    assert read_conditioning([[torch.randn(1, 7, 3584), {"pooled_output": None}]]).glyph is None
    v10 = [[torch.randn(1, 7, 4096), {"pooled_output": torch.randn(1, 768), "attention_mask": torch.ones(1, 7)}]]
    with pytest.raises(InputError) as info:
        read_conditioning(v10, "negative")
    assert "HunyuanVideo 1.0" in str(info.value) and "HunyuanVideo 1.5" in str(info.value)
    with pytest.raises(InputError):
        read_conditioning(native, text_dim=4096)
    with pytest.raises(InputError):
        read_conditioning([[torch.randn(1, 7, 3584), {"attention_mask": torch.ones(1, 6)}]])


def test_start_image_is_attached_as_the_native_node_does():
    embeds = SimpleNamespace(states=torch.randn(1, 5, 8), mask=torch.ones(1, 5, dtype=torch.long), glyph=None)
    cond = to_conditioning(embeds)
    before = dict(cond[0][1])
    image = torch.randn(1, 32, 1, 3, 4)
    out = with_start_image(cond, image, frames=33)
    latent, mask = out[0][1]["concat_latent_image"], out[0][1]["concat_mask"]
    assert latent.shape == (1, 32, 9, 3, 4) and mask.shape == (1, 1, 9, 3, 4)
    assert torch.equal(latent[:, :, :1], image) and not latent[:, :, 1:].any()
    assert not mask[:, :, :1].any() and bool((mask[:, :, 1:] == 1).all())
    unchanged = set(cond[0][1]) == set(before) and all(cond[0][1][k] is v for k, v in before.items())
    assert unchanged, "the input CONDITIONING was changed in place"  # ComfyUI caches node outputs
    assert out[0][0] is cond[0][0] and out[0][1]["attention_mask"] is before["attention_mask"]
    assert read_conditioning(out).start_image[0] is latent


# -- files ----------------------------------------------------------------------------------------------------
def test_claims_and_registry(world, tmp_path):
    from hystream.families import registry
    from hystream.families.hunyuan_video.demo import write_clip_l, write_comfy_llava
    from hystream.loaders.checkpoint import open_checkpoint

    llava = write_comfy_llava(str(tmp_path), vocab=300, layers=3, scaled_fp8=False)
    clip = write_clip_l(str(tmp_path), vocab=300, eos=1, bos=0)
    for path, family in ((world.files["comfy_fp8_scaled"][0], "hunyuan_video_15"), (world.files["gguf"][0], "hunyuan_video_15"),
                         (world.files["hf_full_v5"][0], "hunyuan_video_15"), (llava, "hunyuan_video")):
        source = open_checkpoint(path, subfolders=("text_encoder",))
        try:
            assert claims_text_encoder(set(source.keys())) == (family == "hunyuan_video_15")
            assert registry.for_text_encoder(source).name == family
        finally:
            source.close()
    source = open_checkpoint(clip)
    try:
        assert not claims_text_encoder(set(source.keys()))
    finally:
        source.close()


def test_llava_given_as_the_language_model(world, tmp_path):
    from hystream.families.hunyuan_video.demo import write_comfy_llava

    llava = write_comfy_llava(str(tmp_path), vocab=300, layers=3, scaled_fp8=False)
    with pytest.raises(WrongModelError) as info:
        load_text_encoder(llava, world.byt5_files["comfy"], host_tokenizer_dirs=world.host)
    assert "HunyuanVideo 1.0's text encoder: LLaVA-Llama-3" in str(info.value) and "qwen_2.5_vl_7b" in str(info.value)


def test_clip_given_as_byt5(world, tmp_path):
    from hystream.families.hunyuan_video.demo import write_clip_l

    clip = write_clip_l(str(tmp_path), vocab=300, eos=1, bos=0)
    with pytest.raises(WrongModelError) as info:
        load_text_encoder(world.files["comfy_fp16"][0], clip, host_tokenizer_dirs=world.host)
    assert "CLIP-L" in str(info.value) and "ByT5" in str(info.value) and "byt5_small_glyphxl" in str(info.value)


def test_word_piece_t5_given_as_byt5(world, tmp_path):
    t5 = demo_text.byt5_model(vocab=32128)
    path = demo_text.write_byt5(t5, "comfy", str(tmp_path))
    with pytest.raises(UnsupportedVariantError) as info:
        load_text_encoder(world.files["comfy_fp16"][0], path, host_tokenizer_dirs=world.host)
    assert "32128" in str(info.value)


def test_qwen_file_missing_a_layer(world, tmp_path):
    from safetensors import safe_open

    with safe_open(world.files["comfy_fp16"][0], "pt") as f:
        sd = {k: f.get_tensor(k) for k in f.keys() if not k.startswith("model.layers.1.")}  # noqa: SIM118
    path = str(tmp_path / "qwen_2.5_vl_7b.safetensors")
    save_file(sd, path)
    with pytest.raises(StateDictError) as info:
        load_text_encoder(path, world.byt5_files["comfy"], host_tokenizer_dirs=world.host)
    assert "layers [1] absent" in str(info.value)


def test_released_width_with_too_few_layers():
    from hystream.models.llama_encoder import infer_llama_config

    def shapes(layers):
        out = {"embed_tokens.weight": (152064, 3584)}
        for i in range(layers):
            out |= {f"layers.{i}.self_attn.q_proj.weight": (3584, 3584), f"layers.{i}.self_attn.k_proj.weight": (512, 3584),
                    f"layers.{i}.mlp.gate_proj.weight": (18944, 3584)}
        return out
    cfg = infer_llama_config(shapes(28), "qwen.safetensors", QWEN25)
    assert cfg.model_type == "qwen2" and cfg.num_hidden_layers == 26 and cfg.num_key_value_heads == 4
    with pytest.raises(StateDictError) as info:
        infer_llama_config(shapes(27), "qwen.safetensors", QWEN25)
    assert "27 layers where the released model has 28" in str(info.value)


def test_missing_tokenizer_names_every_place(world, tmp_path):
    path = world.files["comfy_fp16"][0]
    with pytest.raises(NotFoundError) as info:
        load_text_encoder(path, world.byt5_files["comfy"], tokenizer_dir=str(tmp_path),
                          host_tokenizer_dirs={"byt5": world.byt5_dir})
    msg = str(info.value)
    assert "Qwen2.5 tokenizer" in msg and "the tokenizer_dir you gave" in msg and "beside the weights" in msg
    assert "no ComfyUI host found" in msg and os.path.dirname(path) in msg and "qwen25_tokenizer" in msg


def test_one_tokenizer_dir_and_other_tokenizers_beside(world, tmp_path):
    """The ByT5 folder given as tokenizer_dir is passed over for Qwen (and the other way round); HunyuanVideo
    1.0's tokenizer beside the weights is passed over too."""
    from hystream.families.hunyuan_video.demo import write_tiny_llama_tokenizer

    folder = tmp_path / "text_encoders"
    path, _ = demo_text.write_qwen(world.qwen, "comfy_fp16", str(folder))
    write_tiny_llama_tokenizer(str(folder))  # tokenizer.json + tokenizer_config.json beside the Qwen file
    te = load_text_encoder(path, world.byt5_files["comfy"], tokenizer_dir=world.byt5_dir,
                           host_tokenizer_dirs={"qwen25": world.qwen_dir})
    try:
        assert template_crop(te.encoder.qwen_tokenizer) == 108
        assert type(te.encoder.byt5_tokenizer).__name__ == "ByT5Tokenizer"
    finally:
        te.close()
