"""HunyuanVideo-I2V prompts: LLaVA's vision tower + projector turn the start image into the template's
image tokens, the Llama layers stream as for text; the states kept (every k-th image state, the user's
tokens, the blank line after the assistant header) equal diffusers' HunyuanVideoImageToVideoPipeline
`encode_prompt` (≤ 1e-5, fp32) for both interleaves, from ComfyUI's llava_llama3_vision file and from full
LLaVA folders; a vision file without projector, or of another width, is refused clearly."""

import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from hystream import pipeline
from hystream.errors import InputError, WrongModelError
from hystream.families.hunyuan_video.prompt import I2V_TEMPLATE, image_template_tokens
from hystream.families.hunyuan_video.vision import CLIP_MEAN, CLIP_STD, clip_pixels
from hystream.families.hunyuan_video.vision_loader import load_vision
from hystream.loading import load_text_encoder
from tiny_text import save_clip, save_llama

PROMPT = "A cat walks on the grass, realistic style."
SIZE, PATCH = 32, 8
IMAGE_TOKENS = (SIZE // PATCH) ** 2


@pytest.fixture(scope="module")
def world(tmp_path_factory, text_models):
    import copy

    import transformers

    root = tmp_path_factory.mktemp("i2v_prompt")
    tok, llama_tok, clip_tok, llama, clip = text_models
    ref_tok = copy.deepcopy(llama_tok)  # diffusers' side needs <image> as a token; ours splits the template there
    ref_tok.add_tokens(["<image>"], special_tokens=True)
    vcfg = transformers.CLIPVisionConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=3, num_attention_heads=2,
                                         image_size=SIZE, patch_size=PATCH, hidden_act="quick_gelu")
    cfg = transformers.LlavaConfig(vision_config=vcfg, text_config=copy.deepcopy(llama.config), image_token_index=ref_tok.convert_tokens_to_ids("<image>"),
                                   pad_token_id=llama_tok.pad_token_id, projector_hidden_act="gelu", vision_feature_layer=-2,
                                   vision_feature_select_strategy="default", image_seq_length=IMAGE_TOKENS)
    llava = transformers.LlavaForConditionalGeneration(cfg).eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        llava.model.language_model.load_state_dict(llama.state_dict())
        llava.resize_token_embeddings(len(ref_tok))  # a row for <image> (replaced by the image's features)
        for name, p in [*llava.model.vision_tower.named_parameters(), *llava.model.multi_modal_projector.named_parameters()]:
            value = (1 + 0.1 * torch.randn(p.shape, generator=g)) if "norm" in name and name.endswith("weight") else \
                torch.randn(p.shape, generator=g) * (0.05 if p.dim() == 1 else p[0].numel() ** -0.5)
            p.copy_(value.half().float())
    tower = {k: v.half() for k, v in llava.model.vision_tower.state_dict().items() if not k.endswith("position_ids")}
    proj = {k: v.half() for k, v in llava.model.multi_modal_projector.state_dict().items()}
    lead = "" if next(iter(tower)).startswith("vision_model.") else "vision_model."
    comfy = str(root / "clip_vision" / "llava_llama3_vision.safetensors")
    os.makedirs(os.path.dirname(comfy))
    save_file({lead + k: v for k, v in tower.items()} | {"multi_modal_projector." + k: v for k, v in proj.items()}, comfy)
    hf4 = str(root / "hf4" / "model.safetensors")  # transformers 4's LLaVA names (xtuner, diffusers' I2V repo)
    os.makedirs(os.path.dirname(hf4))
    save_file({"vision_tower." + lead + k: v for k, v in tower.items()}
              | {"multi_modal_projector." + k: v for k, v in proj.items()}
              | {"language_model.model." + k: v.half() for k, v in llama.state_dict().items()}
              | {"language_model.lm_head.weight": torch.zeros(4, llama.config.hidden_size, dtype=torch.float16)}, hf4)
    hf5 = str(root / "hf5")  # transformers 5's save_pretrained of the whole LLaVA
    copy.deepcopy(llava).half().save_pretrained(hf5)  # a copy: half() would also round the RoPE frequencies
    files = {"llm": save_llama(llama, "comfy_fp16", str(root / "llm"), tok)[0],
             "clip": save_clip(clip, "clip_l", str(root / "clip")), "comfy": comfy, "hf4": hf4, "hf5": hf5}
    rgb = np.random.default_rng(1).integers(0, 256, size=(SIZE, SIZE, 3), dtype=np.uint8)
    te = load_text_encoder(files["llm"], files["clip"], tokenizer_dir=tok)
    yield {"files": files, "te": te, "llava": llava, "clip": clip, "llama_tok": llama_tok, "ref_tok": ref_tok,
           "clip_tok": clip_tok, "rgb": rgb, "tok": tok, "image": torch.from_numpy(rgb).float()[None] / 255}
    te.close()


def processor():
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE},
                              image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD), resample=3)


def reference(world, interleave):
    from diffusers import HunyuanVideoImageToVideoPipeline
    from PIL import Image

    tokens = image_template_tokens(PROMPT, world["llama_tok"])
    start = len(tokens.head)
    template = {"template": I2V_TEMPLATE, "crop_start": start + 1 + tokens.user[0], "image_emb_len": IMAGE_TOKENS,
                "image_emb_start": start, "image_emb_end": start + IMAGE_TOKENS}
    pipe = HunyuanVideoImageToVideoPipeline(text_encoder=world["llava"], tokenizer=world["ref_tok"], transformer=None, vae=None,
                                            scheduler=None, text_encoder_2=world["clip"], tokenizer_2=world["clip_tok"],
                                            image_processor=processor())
    with torch.no_grad():
        embeds, pooled, mask = pipe.encode_prompt(Image.fromarray(world["rgb"]), PROMPT, prompt_template=template,
                                                  device=torch.device("cpu"), max_sequence_length=256,
                                                  image_embed_interleave=interleave)
    return embeds[0][mask[0].bool()], pooled


def processor_pixels(world):
    from PIL import Image

    return processor()(Image.fromarray(world["rgb"]), return_tensors="pt").pixel_values


def test_pixels_are_clips_preprocessing(world):
    """Same size: only CLIP's mean/std (equal to the float ulp); other sizes: shortest side, center crop."""
    from PIL import Image

    assert (clip_pixels(world["image"], SIZE) - processor_pixels(world)).abs().max().item() <= 1e-6
    big = np.random.default_rng(2).integers(0, 256, size=(48, 80, 3), dtype=np.uint8)
    want = processor()(Image.fromarray(big), return_tensors="pt").pixel_values
    got = clip_pixels(torch.from_numpy(big).float()[None] / 255, SIZE)
    assert got.shape == want.shape == (1, 3, SIZE, SIZE)
    assert (got - want).abs().mean().item() <= 0.02  # resampling kernels differ slightly; the crop is the same


@pytest.mark.parametrize("interleave", [2, 4])
@pytest.mark.parametrize("vision", ["comfy", "hf4", "hf5"])
def test_prompt_with_image_matches_diffusers(world, interleave, vision, monkeypatch):
    """States within 1e-5 of the largest state (~100 in this tiny random Llama, which amplifies float noise:
    the reference itself, run padded with its mask and run unpadded, differs by 1e-4 here), both with our
    preprocessing and with the processor's pixel values."""
    from hystream.families.hunyuan_video import vision as llava_vision

    want, pooled = reference(world, interleave)
    own = pipeline.encode_image_prompt(world["te"], world["files"][vision], world["image"], PROMPT, interleave)[0][0]
    assert (own[0] - want).abs().max().item() <= 1e-5 * want.abs().max().item()
    monkeypatch.setattr(llava_vision, "clip_pixels", lambda image, size: processor_pixels(world))
    cond = pipeline.encode_image_prompt(world["te"], world["files"][vision], world["image"], PROMPT, interleave)
    states, extra = cond[0]
    tokens = image_template_tokens(PROMPT, world["llama_tok"])
    kept_text = tokens.user[1] - tokens.user[0] + len(tokens.tail) - tokens.after  # the prompt + the blank line
    assert states.shape[1] == want.shape[0] == IMAGE_TOKENS // interleave + kept_text
    assert want.abs().max() > 0.1
    assert (states[0] - want).abs().max().item() <= 1e-5 * want.abs().max().item()
    assert (extra["pooled_output"] - pooled).abs().max().item() <= 1e-5
    assert extra["attention_mask"].all()


def test_the_image_changes_the_states(world):
    a = pipeline.encode_image_prompt(world["te"], world["files"]["comfy"], world["image"], PROMPT)[0][0]
    b = pipeline.encode_image_prompt(world["te"], world["files"]["comfy"], 1 - world["image"], PROMPT)[0][0]
    assert (a - b).abs().max() > 1e-3


def test_full_llava_folder_is_also_the_text_encoder(world):
    te = load_text_encoder(world["files"]["hf4"], world["files"]["clip"], tokenizer_dir=world["tok"])
    try:
        got = pipeline.encode_image_prompt(te, world["files"]["hf4"], world["image"], PROMPT)[0][0]
    finally:
        te.close()
    want = pipeline.encode_image_prompt(world["te"], world["files"]["comfy"], world["image"], PROMPT)[0][0]
    assert (got - want).abs().max().item() <= 1e-5


def test_vision_files_that_cannot_serve(world, tmp_path):
    with pytest.raises(WrongModelError) as info:  # the text encoder file, no vision tower
        load_vision(world["files"]["llm"])
    assert "vision tower" in str(info.value) and "clip_vision" in str(info.value)
    from safetensors.torch import load_file

    sd = load_file(world["files"]["comfy"])
    plain = str(tmp_path / "clip_vision_h.safetensors")  # a CLIP vision model without LLaVA's projector
    save_file({k: v for k, v in sd.items() if not k.startswith("multi_modal_projector.")}, plain)
    with pytest.raises(WrongModelError) as info:
        load_vision(plain)
    assert "without the multimodal projector" in str(info.value)
    narrow = str(tmp_path / "other_llava_vision.safetensors")
    save_file(sd | {"multi_modal_projector.linear_1.weight": torch.zeros(64, 128, dtype=torch.float16),
                    "multi_modal_projector.linear_1.bias": torch.zeros(64, dtype=torch.float16),
                    "multi_modal_projector.linear_2.weight": torch.zeros(64, 64, dtype=torch.float16),
                    "multi_modal_projector.linear_2.bias": torch.zeros(64, dtype=torch.float16)}, narrow)
    with pytest.raises(InputError) as info:
        pipeline.encode_image_prompt(world["te"], narrow, world["image"], PROMPT)
    assert "Llama width (512)" in str(info.value)


def test_sampler_warns_when_the_prompt_is_for_another_variant(world, tmp_path, caplog):
    """An image prompt on a T2V DiT, or interleave 2 on token replace: it runs, with a warning naming the fix."""
    import dataclasses

    from hystream.loading import load_dit
    from hystream.pipeline import SampleSettings
    from tiny_dit import TINY, save_layout, tencent_state_dict

    cfg = dataclasses.replace(TINY, text_dim=512, pooled_dim=128)
    path = save_layout(tencent_state_dict(cfg), "comfy", str(tmp_path), cfg)[0]
    cond = pipeline.encode_image_prompt(world["te"], world["files"]["comfy"], world["image"], PROMPT, 2)
    dit = load_dit(path)
    try:
        pipeline.sample(dit, cond, pipeline.empty_latent(32, 32, 1), SampleSettings(steps=1))
        assert "trained on text prompts" in caplog.text
        caplog.clear()
        image = torch.zeros(1, 16, 1, 4, 4)
        pipeline.sample(dit, pipeline.with_start_image(cond, image, 1), pipeline.empty_latent(32, 32, 1), SampleSettings(steps=1))
        assert "image_interleave 2 on a token_replace DiT; its reference uses 4" in caplog.text
    finally:
        dit.close()
