"""Driving the real ComfyUI as an automation user does: /object_info, the example API workflows
(T2V, V2V, LoRA) queued on /prompt and followed on the websocket, mp4s fetched from /view, bad
requests, /interrupt, and native ComfyUI nodes on HyStream's outputs."""

import json
import os
import re

import torch

from comfy_host import fetch_output, run_prompt, upload
from hystream.video_io import read_video, write_mp4

HERE = os.path.dirname(os.path.abspath(__file__))
API = os.path.join(HERE, "..", "example_workflows", "api")
NODES = {  # the node contract of the issue: class → its inputs
    "HyStreamDiTLoader": ["dit_name", "weight_dtype", "vram_budget_gb", "prefetch_blocks", "compute_dtype"],
    "HyStreamTextEncoderLoader": ["llm_name", "clip_name", "tokenizer_dir"],
    "HyStreamVAELoader": ["vae_name"],
    "HyStreamTextEncode": ["text_encoder", "prompt"],
    "HyStreamLoRA": ["dit", "lora_name", "strength"],
    "HyStreamStepCache": ["dit", "method", "threshold", "start", "end", "max_skips"],
    "HyStreamSampler": ["dit", "positive", "latent", "seed", "steps", "flow_shift", "embedded_guidance", "denoise",
                        "negative", "cfg", "gpus"],
    "HyStreamVAEDecode": ["vae", "samples", "tile_size", "tile_overlap", "temporal_tile", "temporal_overlap", "gpus"],
    "HyStreamVAEEncode": ["vae", "images", "tile_size", "tile_overlap", "temporal_tile", "temporal_overlap"],
    "HyStreamSaveVideo": ["images", "fps", "filename_prefix", "crf"],
    "HyStreamLoadVideo": ["video", "max_frames", "frame_step"],
    "HyStreamImageToVideo": ["positive", "vae", "start_image", "width", "height", "length", "negative", "vision_name",
                             "clip_vision_output"],
    "HyStreamEmptyLatentVideo": ["vae", "width", "height", "length", "batch_size"],
    "HyStreamTextEncodeImage": ["text_encoder", "vision_name", "image", "prompt", "image_interleave"],
}


def workflow(name: str, **overrides) -> dict:
    """An example API workflow made small enough for tiny models on a CPU."""
    with open(os.path.join(API, f"{name}.api.json")) as f:
        wf = json.load(f)
    for node in wf.values():
        inputs = node["inputs"]
        if node["class_type"] in ("EmptyHunyuanLatentVideo", "HyStreamImageToVideo"):
            inputs.update(width=64, height=64, length=9)
        if node["class_type"] == "HyStreamSampler":
            inputs.update(steps=4)
        if node["class_type"] == "HyStreamLoadVideo":
            inputs.update(max_frames=9)
    for path, value in overrides.items():
        node, key = path.split(".")
        wf[node]["inputs"][key] = value
    return wf


def write_png(path: str, height: int, width: int, seed: int = 0) -> str:
    """A start image: a smooth colour gradient with a little noise."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x / width, y / height, 0.5 + 0 * x], -1) * 200 + np.random.default_rng(seed).integers(0, 55, (height, width, 3))
    Image.fromarray(rgb.astype(np.uint8)).save(path)
    return path


def video_of(host, result, tmp_path, node="8"):
    outputs = result["history"]["outputs"][node]
    item = outputs["images"][0]
    assert item["filename"].endswith(".mp4") and outputs.get("animated") in ([True], (True,), True)
    frames, fps = read_video(fetch_output(host, item, str(tmp_path / item["filename"])))
    return frames, fps


def test_object_info_lists_every_node(comfy_host):
    info = comfy_host.get("/object_info")
    for cls, inputs in NODES.items():
        assert cls in info, cls
        node = info[cls]
        declared = {**node["input"].get("required", {}), **node["input"].get("optional", {})}
        assert list(declared) == inputs, (cls, list(declared))
        assert node["category"] == "HyStream" and node["description"]
        for name, spec in declared.items():
            assert spec[1].get("tooltip"), f"{cls}.{name} has no tooltip"
    assert "hunyuan_video_t2v_720p_bf16.safetensors" in info["HyStreamDiTLoader"]["input"]["required"]["dit_name"][0]
    sampler = info["HyStreamSampler"]["input"]
    assert sampler["required"]["steps"][1]["default"] == 30 and sampler["required"]["flow_shift"][1]["default"] == 7.0
    assert sampler["optional"]["cfg"][1]["default"] == 1.0
    assert info["HyStreamSaveVideo"]["output_node"] is True
    assert info["HyStreamLoadVideo"]["input"]["required"]["video"][1].get("video_upload") is True


def test_example_workflows_use_existing_nodes_and_inputs(comfy_host):
    info = comfy_host.get("/object_info")
    for name in os.listdir(API):
        with open(os.path.join(API, name)) as f:
            wf = json.load(f)
        for node_id, node in wf.items():
            assert node["class_type"] in info, (name, node["class_type"])
            spec = info[node["class_type"]]["input"]
            known = {**spec.get("required", {}), **spec.get("optional", {})}
            assert set(node["inputs"]) <= set(known), (name, node_id, set(node["inputs"]) - set(known))
            for key, value in node["inputs"].items():
                if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                    assert value[0] in wf, (name, node_id, key)  # links point at nodes of the workflow


def test_text_to_video_over_http(comfy_host, tmp_path):
    log_before = len(comfy_host.log())
    # a prompt no other test used: ComfyUI would answer the encoder from its cache (no progress to see)
    result = run_prompt(comfy_host, workflow("hunyuan_t2v_lowvram", **{"4.prompt": "a heron wades through reeds at dusk"}))
    assert result["status"] == "success", result.get("error")
    progress = [m["data"] for m in result["messages"] if m["type"] == "progress"]
    sampler_steps = [p for p in progress if p["node"] == "6"]
    assert sampler_steps and sampler_steps[-1]["value"] == sampler_steps[-1]["max"] == 4
    assert {p["node"] for p in progress} >= {"4", "6", "7"}  # encoder layers, sampler steps, VAE tiles
    assert any(m["type"] == "executed" and m["data"]["node"] == "8" for m in result["messages"])
    frames, fps = video_of(comfy_host, result, tmp_path)
    assert frames.shape == (9, 64, 64, 3) and fps == 24.0
    new_log = comfy_host.log()[log_before:]
    assert "Traceback" not in new_log, new_log[-3000:]
    assert re.search(r"HyStream sampler: 4 steps", new_log)


def test_lora_workflow(comfy_host, tmp_path):
    result = run_prompt(comfy_host, workflow("hunyuan_t2v_lora_lowvram"))
    assert result["status"] == "success", result.get("error")
    frames, _ = video_of(comfy_host, result, tmp_path)
    assert frames.shape == (9, 64, 64, 3)


def test_video_to_video_with_upload(comfy_host, tmp_path):
    t = torch.linspace(0, 1, 11)[:, None, None, None]
    clip = (torch.rand(1, 72, 80, 3) * 0.5 + t * 0.5).clamp(0, 1)  # 11 frames of 80×72: cropped to 9 of 80×64
    source = write_mp4(clip, str(tmp_path / "clip.mp4"))
    stored = upload(comfy_host, source, "input_video.mp4")
    assert stored["name"] == "input_video.mp4"
    result = run_prompt(comfy_host, workflow("hunyuan_v2v_lowvram", **{"10.max_frames": 0}))
    assert result["status"] == "success", result.get("error")
    frames, _ = video_of(comfy_host, result, tmp_path)
    assert frames.shape == (9, 64, 80, 3)
    sampler = [m["data"] for m in result["messages"] if m["type"] == "progress" and m["data"]["node"] == "6"]
    assert sampler[-1]["max"] == round(4 * 0.6)  # denoise 0.6 of 4 steps


def test_native_nodes_on_hystream_outputs(comfy_host):
    """ComfyUI's own VAELoader + VAEDecode read a VAE file we write in the Comfy-Org layout (at the
    real widths, which ComfyUI's loader assumes) and decode the HyStream sampler's LATENT: the key names
    and the LATENT format are the native ones."""
    from hystream.families.hunyuan_video.demo import write_comfy_vae

    write_comfy_vae(os.path.join(comfy_host.models["models"], "vae"), full_size=True, name="hunyuan_video_vae_full.safetensors")
    wf = workflow("hunyuan_t2v_lowvram")
    del wf["7"], wf["8"]
    wf["20"] = {"class_type": "VAELoader", "inputs": {"vae_name": "hunyuan_video_vae_full.safetensors"}}
    wf["21"] = {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["20", 0]}}
    wf["22"] = {"class_type": "PreviewImage", "inputs": {"images": ["21", 0]}}
    result = run_prompt(comfy_host, wf)
    assert result["status"] == "success", result.get("error")
    assert len(result["history"]["outputs"]["22"]["images"]) == 9, result["history"]


def test_bad_requests_get_our_messages(comfy_host):
    missing = run_prompt(comfy_host, workflow("hunyuan_t2v_lowvram", **{"1.dit_name": "hunyuan_video_missing.safetensors"}))
    assert missing["status"] == "rejected" and missing["code"] == 400
    details = json.dumps(missing["answer"]["node_errors"]["1"])
    assert "File not found" in details and "hunyuan_video_missing.safetensors" in details and "diffusion_models" in details

    # 520 px is 65 latent columns: not a multiple of 16 px, caught by the sampler before any model work
    odd = run_prompt(comfy_host, workflow("hunyuan_t2v_lowvram", **{"5.width": 520}))
    assert odd["status"] == "error"
    assert odd["error"]["node_type"] == "HyStreamSampler"
    assert "multiples of 16" in odd["error"]["exception_message"] and "520" in odd["error"]["exception_message"]

    wrong = run_prompt(comfy_host, workflow("hunyuan_t2v_lowvram", **{"2.llm_name": "clip_l.safetensors"}))
    assert wrong["status"] == "error" and "LLaVA-Llama-3" in wrong["error"]["exception_message"]
    assert comfy_host.get("/system_stats")  # still serving


def test_interrupt_during_sampling_then_next_run(comfy_host, tmp_path):
    state = {"sent": False}

    def on_message(msg):
        if msg["type"] == "progress" and msg["data"]["node"] == "6" and not state["sent"]:
            state["sent"] = True
            comfy_host.post("/interrupt", {})

    slow = workflow("hunyuan_t2v_lowvram", **{"6.steps": 400, "6.seed": 123})
    result = run_prompt(comfy_host, slow, on_message=on_message)
    assert state["sent"] and result["status"] == "interrupted"
    steps = [m["data"]["value"] for m in result["messages"] if m["type"] == "progress" and m["data"]["node"] == "6"]
    assert max(steps) < 400
    after = run_prompt(comfy_host, workflow("hunyuan_t2v_lowvram", **{"6.seed": 5}))
    assert after["status"] == "success", after.get("error")
    frames, _ = video_of(comfy_host, after, tmp_path)
    assert frames.shape[0] == 9


def mag_cache_skips(steps: int, threshold: float, start: float, end: float, max_skips: int, height: int) -> int:
    """How many steps MagCache skips with these settings: its decisions follow the published ratios and the
    settings only, never the model's values, so a host run must report exactly this many."""
    from hystream.families.hunyuan_video.caches import CACHE_CONSTANTS
    from hystream.sampling.step_cache import StepCacheSettings
    from hystream.sampling.step_caches import make_step_cache

    cache = make_step_cache(StepCacheSettings("mag_cache", threshold, start, end, max_skips), steps, height, CACHE_CONSTANTS)
    cache.begin_pass("positive")
    x = torch.zeros(1)
    for _ in range(steps):
        if cache.before_blocks(x) is None:
            cache.after_blocks(x, x + 1)
    return cache.summary()["skipped"]


def test_step_cache_workflow(comfy_host, tmp_path):
    """The step-cache example through the host skips as many steps as its settings call for (0.05 skips 5 of
    10; the 0.12 default would skip 6), the sampler's log says so, and the video differs from the same
    workflow with the cache at threshold 0 (off: no step-cache line at all)."""
    expected = mag_cache_skips(10, 0.05, 0.1, 1.0, 3, 64)
    assert expected == 5 != mag_cache_skips(10, 0.12, 0.1, 1.0, 3, 64)  # the count tells the threshold apart
    runs = {}
    for threshold in (0.05, 0.0):
        log_before = len(comfy_host.log())
        wf = workflow("hunyuan_t2v_stepcache_lowvram", **{"6.steps": 10, "13.method": "mag_cache", "13.threshold": threshold,
                                                          "13.start": 0.1, "13.end": 1.0, "13.max_skips": 3})
        result = run_prompt(comfy_host, wf)
        assert result["status"] == "success", result.get("error")
        runs[threshold] = video_of(comfy_host, result, tmp_path)[0], comfy_host.log()[log_before:]
        assert runs[threshold][0].shape[0] == 9 and "HyStream sampler: 10 steps" in runs[threshold][1]  # it ran
    line = re.search(r"step cache mag_cache \(threshold 0\.05\): (\d+) of (\d+) passes skipped", runs[0.05][1])
    assert line and (int(line.group(1)), int(line.group(2))) == (expected, 10), runs[0.05][1][-2000:]
    assert "step cache" not in runs[0.0][1], runs[0.0][1][-2000:]
    assert not torch.equal(runs[0.05][0], runs[0.0][0])  # the skipped steps changed the video


def test_image_to_video_over_http(comfy_host, tmp_path):
    """The I2V example: LoadImage → HyStreamImageToVideo (start image cropped and resized, with a warning)
    → the 33-channel DiT; the decode drops the 4 frames the reference pipeline drops."""
    log_before = len(comfy_host.log())
    upload(comfy_host, write_png(str(tmp_path / "start.png"), 50, 90), "start_image.png")
    result = run_prompt(comfy_host, workflow("hunyuan_i2v_lowvram"))
    assert result["status"] == "success", result.get("error")
    frames, _ = video_of(comfy_host, result, tmp_path)
    assert frames.shape == (9 - 4, 64, 64, 3)
    new_log = comfy_host.log()[log_before:]
    assert "start image (90x50) was cropped to 50x50" in new_log, new_log[-2000:]

    t2v = run_prompt(comfy_host, workflow("hunyuan_t2v_lowvram", **{"1.dit_name": "hunyuan_video_image_to_video_720p_bf16.safetensors"}))
    assert t2v["status"] == "error" and "start image" in t2v["error"]["exception_message"]
    assert "HyStreamImageToVideo" in t2v["error"]["exception_message"]


def test_native_image_to_video_node_feeds_our_sampler(comfy_host, tmp_path):
    """ComfyUI's own HunyuanImageToVideo (with its own VAE) carries the start image in its format; our
    sampler reads it: "v1 (concat)" for the 33-channel DiT, "v2 (replace)" as token replace on a 16-channel
    one."""
    from hystream.families.hunyuan_video.demo import write_comfy_vae

    vae_dir = os.path.join(comfy_host.models["models"], "vae")
    if not os.path.exists(os.path.join(vae_dir, "hunyuan_video_vae_full.safetensors")):
        write_comfy_vae(vae_dir, full_size=True, name="hunyuan_video_vae_full.safetensors")
    upload(comfy_host, write_png(str(tmp_path / "start.png"), 64, 64), "start_image.png")
    for dit, guidance, frames in (("hunyuan_video_image_to_video_720p_bf16.safetensors", "v1 (concat)", 5),
                                  ("hunyuan_video_t2v_720p_bf16.safetensors", "v2 (replace)", 9)):
        wf = workflow("hunyuan_i2v_lowvram", **{"1.dit_name": dit})
        wf["20"] = {"class_type": "VAELoader", "inputs": {"vae_name": "hunyuan_video_vae_full.safetensors"}}
        wf["12"] = {"class_type": "HunyuanImageToVideo", "inputs": {
            "positive": ["4", 0], "vae": ["20", 0], "width": 64, "height": 64, "length": 9, "batch_size": 1,
            "guidance_type": guidance, "start_image": ["11", 0]}}
        wf["6"]["inputs"]["latent"] = ["12", 1]
        result = run_prompt(comfy_host, wf)
        assert result["status"] == "success", (guidance, result.get("error"))
        assert video_of(comfy_host, result, tmp_path)[0].shape == (frames, 64, 64, 3)
