"""FramePack through the real ComfyUI API: the example workflow (HyStreamFramePackSampler on the demo's FramePack
and FramePack-F1 files, SigLIP from clip_vision, a start image from LoadImage) gives the frames diffusers'
HunyuanVideoFramepackPipeline gives with the same weights — both sampling orders (picked from the file name),
six sections — within the 8-bit rounding of SaveImage; the mp4 has as many frames; a DiT that is not FramePack
is refused by name. The reference is handed the prompt, SigLIP states and start latent our loaders make (each
compared with its reference elsewhere: test_pipeline, test_vision15, the VAE tests)."""

import json
import os

import numpy as np
import pytest
import torch

from comfy_host import fetch_output, run_prompt, upload
from hystream.video_io import read_video
from test_host_api import write_png

API = os.path.join(os.path.dirname(__file__), "..", "example_workflows", "api")
WIDTH, HEIGHT, SECONDS, WINDOW, STEPS, SEED = 64, 48, 1.0, 2, 2, 5
PROMPT = "a paper lantern drifts over a river at dusk"


def workflow(dit: str) -> dict:
    with open(os.path.join(API, "hunyuan_framepack_lowvram.api.json")) as f:
        wf = json.load(f)
    wf["1"]["inputs"]["dit_name"] = dit
    wf["3"]["inputs"]["vae_name"] = "framepack_ref/hunyuan_video_vae_bf16.safetensors"
    wf["4"]["inputs"]["prompt"] = PROMPT
    wf["11"]["inputs"]["image"] = "framepack_start.png"
    wf["6"]["inputs"].update(width=WIDTH, height=HEIGHT, seconds=SECONDS, window=WINDOW, steps=STEPS, seed=SEED,
                             output="mp4 + frames", filename_prefix="framepack/run")
    wf["30"] = {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "framepack/frames"}}
    return wf


@pytest.fixture(scope="module")
def world(comfy_host, tmp_path_factory):
    from hystream import pipeline
    from hystream.families.hunyuan_video.vae import SCALING_FACTOR
    from hystream.loaders.siglip_loader import encode_start_image
    from hystream.loading import load_text_encoder, load_vae
    from tiny_vae import reference_vae, save_vae

    models, tmp = comfy_host.models["models"], tmp_path_factory.mktemp("framepack_host")
    vae_ref = reference_vae(seed=2)
    vae_path = save_vae(vae_ref, "comfy", os.path.join(models, "vae", "framepack_ref"))
    png = write_png(str(tmp / "start.png"), 60, 90, seed=3)
    upload(comfy_host, png, "framepack_start.png")
    from PIL import Image

    image = torch.from_numpy(np.asarray(Image.open(png).convert("RGB"), dtype=np.float32) / 255.0)[None]
    te = load_text_encoder(comfy_host.models["llm"], comfy_host.models["clip"])
    try:
        cond = pipeline.encode_prompt(te, PROMPT)
    finally:
        te.close()
    vae = load_vae(vae_path)
    start = pipeline.encode_start_image(vae, image, WIDTH, HEIGHT) * SCALING_FACTOR
    siglip = os.path.join(comfy_host.models15["models"], "clip_vision", "sigclip_vision_patch14_384.safetensors")
    states = encode_start_image(siglip, image, WIDTH, HEIGHT, "cpu")
    return {"vae": vae_ref, "cond": cond, "start": start, "states": states, "tmp": tmp}


def reference_frames(comfy_host, world, dit_path: str, order: str) -> torch.Tensor:
    from diffusers import FlowMatchEulerDiscreteScheduler, HunyuanVideoFramepackPipeline
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video_framepack import FramepackSamplingType
    from safetensors.torch import load_file

    from hystream.families.hunyuan_video.demo import TINY_DIT
    from hystream.families.hunyuan_video.demo_framepack import framepack_config
    from tiny_framepack import reference_model_of

    cfg = framepack_config(TINY_DIT)
    transformer = reference_model_of(cfg)
    transformer.load_state_dict({k: v.float() for k, v in load_file(dit_path).items()}, strict=True)
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096)
    pipe = HunyuanVideoFramepackPipeline(text_encoder=None, tokenizer=None, transformer=transformer, vae=world["vae"],
                                         scheduler=scheduler, text_encoder_2=None, tokenizer_2=None,
                                         image_encoder=None, feature_extractor=None)
    pipe.encode_image = lambda image, device=None, dtype=None: world["states"]
    pipe.prepare_image_latents = lambda image, dtype=None, device=None, generator=None, latents=None: world["start"]
    states, extra = world["cond"][0]
    kind = FramepackSamplingType.INVERTED_ANTI_DRIFTING if order == "inverted" else FramepackSamplingType.VANILLA
    with torch.no_grad():
        video = pipe(image=torch.zeros(1, 3, HEIGHT, WIDTH), prompt_embeds=states, pooled_prompt_embeds=extra["pooled_output"],
                     prompt_attention_mask=extra.get("attention_mask", torch.ones(states.shape[:2], dtype=torch.long)),
                     height=HEIGHT, width=WIDTH, num_frames=round(SECONDS * 30), latent_window_size=WINDOW,
                     num_inference_steps=STEPS, guidance_scale=10.0, generator=torch.Generator().manual_seed(SEED),
                     sampling_type=kind, output_type="pt", return_dict=False)[0]
    return video[0].permute(0, 2, 3, 1)


@pytest.mark.parametrize("key, order", [("framepack_dit", "inverted"), ("framepack_f1_dit", "forward")])
def test_framepack_over_the_api_equals_diffusers(comfy_host, world, key, order):
    from PIL import Image

    dit = comfy_host.models[key]
    log_before = len(comfy_host.log())
    result = run_prompt(comfy_host, workflow(os.path.basename(dit)), timeout=600)
    assert result["status"] == "success", result.get("error") or result.get("answer")
    outputs = result["history"]["outputs"]
    tmp = world["tmp"]
    frames = torch.from_numpy(np.stack([np.asarray(Image.open(fetch_output(comfy_host, it, str(tmp / it["filename"]))))
                                         for it in outputs["30"]["images"]])).float() / 255
    want = reference_frames(comfy_host, world, dit, order)
    want8 = (want * 255).round() / 255  # SaveImage writes 8-bit PNGs
    assert frames.shape == want8.shape and frames.shape[0] == 4 * 12 + 1  # 6 sections of 2 latent frames + the image
    assert (frames - want8).abs().max().item() <= 1 / 255 + 1e-6
    item = outputs["6"]["images"][0]
    video, fps = read_video(fetch_output(comfy_host, item, str(tmp / item["filename"])))
    assert video.shape[0] == frames.shape[0] and fps == 30
    assert f"sections of {STEPS} steps ({order})" in comfy_host.log()[log_before:]


def test_a_dit_that_is_not_framepack_is_refused(comfy_host, world):
    result = run_prompt(comfy_host, workflow("hunyuan_video_t2v_720p_bf16.safetensors"))
    assert result["status"] == "error"
    message = result["error"]["exception_message"]
    assert "FramePack" in message and "HyStreamSampler" in message
