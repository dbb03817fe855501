"""HunyuanVideo 1.5 through the real ComfyUI API: the example T2V and I2V workflows (the issue's node contract)
run on the demo's Comfy-Org files, and their latents (SaveLatent) and frames (SaveImage) equal diffusers'
HunyuanVideo15Pipeline / HunyuanVideo15ImageToVideoPipeline on the same weights."""

import json
import os

import numpy as np
import pytest
import torch
from safetensors import safe_open

from comfy_host import fetch_output, run_prompt, upload

HERE = os.path.dirname(os.path.abspath(__file__))
API = os.path.join(HERE, "..", "example_workflows", "api")
SIDE, FRAMES, STEPS, SEED = 48, 9, 3, 5  # a square video: SigLIP's square input then needs no 8-bit resize
SQUARE_SIGLIP = "sigclip_vision_square48_test.safetensors"
CONTRACT = {"HyStreamDiTLoader": {"dit_name", "weight_dtype", "vram_budget_gb", "prefetch_blocks"},
            "HyStreamTextEncoderLoader": {"llm_name", "clip_name"}, "HyStreamTextEncode": {"text_encoder", "prompt"},
            "HyStreamEmptyLatentVideo": {"vae", "width", "height", "length", "batch_size"},
            "HyStreamSampler": {"dit", "positive", "latent", "seed", "steps", "flow_shift", "embedded_guidance",
                                "denoise", "negative", "cfg"}}


def workflow(name: str) -> dict:
    with open(os.path.join(API, f"{name}.api.json")) as f:
        wf = json.load(f)
    for node in wf.values():
        if node["class_type"] in ("HyStreamEmptyLatentVideo", "HyStreamImageToVideo"):
            node["inputs"].update(width=SIDE, height=SIDE, length=FRAMES)
        if node["class_type"] == "HyStreamSampler":
            node["inputs"].update(steps=STEPS, seed=SEED)
    wf["30"] = {"class_type": "SaveLatent", "inputs": {"samples": ["6", 0], "filename_prefix": f"latents/{name}"}}
    wf["31"] = {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": f"frames/{name}"}}
    return wf


def run(host, wf, tmp_path):
    from PIL import Image

    result = run_prompt(host, wf, timeout=600)
    assert result["status"] == "success", result.get("error")
    outputs = result["history"]["outputs"]
    item = outputs["30"]["latents"][0]
    with safe_open(fetch_output(host, item, str(tmp_path / item["filename"])), "pt") as f:
        latent = f.get_tensor("latent_tensor")
    frames = [np.asarray(Image.open(fetch_output(host, it, str(tmp_path / it["filename"])))) for it in outputs["31"]["images"]]
    return latent, torch.from_numpy(np.stack(frames)).float() / 255


@pytest.fixture(scope="module")
def reference(comfy_host, tmp_path_factory):
    """diffusers' pipelines on the weights the demo files hold (made again from the demo's seeds)."""
    from diffusers import AutoencoderKLHunyuanVideo15, FlowMatchEulerDiscreteScheduler, HunyuanVideo15Pipeline
    from diffusers.guiders import ClassifierFreeGuidance
    from transformers import ByT5Tokenizer, Qwen2Tokenizer

    from hystream.families.hunyuan_video_15.demo import TINY_DIT
    from hystream.families.hunyuan_video_15.demo_dit import tencent_state_dict
    from hystream.families.hunyuan_video_15.demo_text import byt5_model, qwen_model, scaled_fp8
    from hystream.families.hunyuan_video_15.demo_vae import write_vae
    from hystream.families.hunyuan_video_15.prompt import template_crop
    from tiny_dit15 import diffusers_model

    te = os.path.join(comfy_host.models15["models"], "text_encoders")
    qwen_tok = Qwen2Tokenizer.from_pretrained(os.path.join(te, "tokenizer"))
    qwen = qwen_model(0, vocab=len(qwen_tok))
    _, deq = scaled_fp8({k: v.detach() for k, v in qwen.state_dict().items()}, r"layers\.\d+\..*_proj\.weight$")
    qwen.load_state_dict(deq)
    vae_dir = write_vae(str(tmp_path_factory.mktemp("vae15")), "diffusers", residual_scale=0.5)
    vae = AutoencoderKLHunyuanVideo15.from_pretrained(vae_dir, subfolder="vae", torch_dtype=torch.float32).eval()

    def dit(seed):
        return diffusers_model({k: v.half().float() for k, v in tencent_state_dict(TINY_DIT, seed).items()}, TINY_DIT)

    parts = {"text_encoder": qwen, "tokenizer": qwen_tok, "vae": vae, "text_encoder_2": byt5_model(0),
             "tokenizer_2": ByT5Tokenizer.from_pretrained(os.path.join(te, "tokenizer_2")),
             "scheduler": FlowMatchEulerDiscreteScheduler(shift=5.0), "guider": ClassifierFreeGuidance(guidance_scale=6.0)}
    t2v = HunyuanVideo15Pipeline(transformer=dit(0), **parts)
    # diffusers hard-codes the template's head as the real tokenizer's 108 tokens; the demo's tiny tokenizer
    # spells the same system message in fewer (test_text15 checks 108 on the real one)
    t2v.prompt_template_encode_start_idx = template_crop(qwen_tok)
    return {"t2v": t2v, "i2v_dit": dit(1), "parts": parts, "crop": t2v.prompt_template_encode_start_idx}


def compare(got_latent, got_frames, want_latent, want_frames):
    from hystream.families.hunyuan_video_15.family import SCALING_FACTOR

    assert got_latent.shape == want_latent.shape and want_latent.abs().max() > 0.5
    assert (got_latent.float() * SCALING_FACTOR - want_latent).abs().max().item() <= 1e-4
    want8 = (want_frames * 255).round() / 255  # SaveImage writes 8-bit PNGs: ours within rounding of the reference
    assert got_frames.shape == want8.shape
    assert (got_frames - want8).abs().max().item() <= 1 / 255 + 1e-6


def test_1_5_text_to_video_over_the_api_equals_diffusers(comfy_host, reference, tmp_path):
    wf = workflow("hunyuan15_t2v_lowvram")
    for node in wf.values():  # the contract: these inputs, and only HyStream nodes up to the decode
        assert CONTRACT.get(node["class_type"], set()) <= set(node["inputs"]), node
    latent, frames = run(comfy_host, wf, tmp_path)
    prompt = wf["4"]["inputs"]["prompt"]
    with torch.no_grad():
        kw = {"height": SIDE, "width": SIDE, "num_frames": FRAMES, "num_inference_steps": STEPS, "return_dict": False}
        want = reference["t2v"](prompt, generator=torch.Generator().manual_seed(SEED), output_type="latent", **kw)[0]
        want_frames = reference["t2v"](prompt, generator=torch.Generator().manual_seed(SEED), output_type="pt", **kw)[0]
    compare(latent, frames, want, want_frames[0].permute(0, 2, 3, 1))


def test_1_5_image_to_video_over_the_api_equals_diffusers(comfy_host, reference, tmp_path):
    from diffusers import HunyuanVideo15ImageToVideoPipeline
    from PIL import Image
    from transformers import SiglipImageProcessor

    from hystream.families.hunyuan_video_15.demo_vision import tiny_siglip, write_comfy_siglip

    siglip = tiny_siglip(seed=3, image_size=SIDE, patch_size=16)
    write_comfy_siglip(siglip, os.path.join(comfy_host.models15["models"], "clip_vision"), SQUARE_SIGLIP)
    rng = np.random.default_rng(4)
    y, x = np.mgrid[:SIDE, :SIDE] / SIDE
    rgb = np.clip(np.stack([np.sin(5 * x * (c + 1) + 4 * y + rng.uniform(0, 6)) for c in range(3)], -1) * 110 + 128,
                  0, 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "start15.png")
    upload(comfy_host, str(tmp_path / "start15.png"), "start15.png")
    wf = workflow("hunyuan15_i2v_lowvram")
    wf["11"]["inputs"]["image"] = "start15.png"
    wf["12"]["inputs"]["vision_name"] = SQUARE_SIGLIP
    latent, frames = run(comfy_host, wf, tmp_path)

    extractor = SiglipImageProcessor(size={"height": SIDE, "width": SIDE}, resample=3, do_rescale=True,
                                     rescale_factor=1 / 255, do_normalize=True, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    pipe = HunyuanVideo15ImageToVideoPipeline(transformer=reference["i2v_dit"], image_encoder=siglip,
                                              feature_extractor=extractor, **reference["parts"])
    pipe.target_size = SIDE  # its size buckets then hold SIDE²: the video size is the image's
    pipe.prompt_template_encode_start_idx = reference["crop"]
    with torch.no_grad():
        kw = {"image": Image.fromarray(rgb), "prompt": wf["4"]["inputs"]["prompt"], "num_frames": FRAMES,
              "num_inference_steps": STEPS, "return_dict": False}
        want = pipe(generator=torch.Generator().manual_seed(SEED), output_type="latent", **kw)[0]
        want_frames = pipe(generator=torch.Generator().manual_seed(SEED), output_type="pt", **kw)[0]
    compare(latent, frames, want, want_frames[0].permute(0, 2, 3, 1))
