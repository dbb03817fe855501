"""A city96-layout GGUF DiT inside the real ComfyUI: listed by our DiT loader (and not by the native
UNETLoader, which cannot read it), run end to end by the T2V workflow, with the latents its dequantised
safetensors twin gives; a LLaVA GGUF is listed for the text encoder."""

import os

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from comfy_host import fetch_output, run_prompt
from test_host_api import workflow
from tiny_gguf import dit_types, twin, write_gguf

PREFIX = "model.diffusion_model."
GGUF_NAME = "hunyuan-video-t2v-720p-Q5_K_M.gguf"  # the bad-input tests put a broken Q4_K_M beside it
TWIN_NAME = "hunyuan_video_gguf_twin_fp32.safetensors"


def write_files(models: str) -> None:
    folder = os.path.join(models, "diffusion_models")
    if os.path.exists(os.path.join(folder, GGUF_NAME)):
        return
    bf16 = load_file(os.path.join(folder, "hunyuan_video_t2v_720p_bf16.safetensors"))
    sd = {k.removeprefix(PREFIX): v.float() for k, v in bf16.items()}
    tensors = dit_types(sd)
    save_file(twin(tensors), os.path.join(folder, TWIN_NAME))
    write_gguf(os.path.join(folder, GGUF_NAME), tensors)


def latents_of(host, dit_name, tmp_path):
    wf = workflow("hunyuan_t2v_lowvram", **{"1.dit_name": dit_name, "6.seed": 11})
    del wf["7"], wf["8"]
    wf["30"] = {"class_type": "SaveLatent", "inputs": {"samples": ["6", 0], "filename_prefix": f"latents/{dit_name}"}}
    result = run_prompt(host, wf)
    assert result["status"] == "success", result.get("error")
    item = result["history"]["outputs"]["30"]["latents"][0]
    path = fetch_output(host, item, str(tmp_path / item["filename"]))
    with safe_open(path, "pt") as f:
        return f.get_tensor("latent_tensor")


def test_gguf_dit_is_listed_and_runs_like_its_twin(comfy_host, tmp_path):
    write_files(comfy_host.models["models"])
    info = comfy_host.get("/object_info")
    assert GGUF_NAME in info["HyStreamDiTLoader"]["input"]["required"]["dit_name"][0]
    assert GGUF_NAME not in info["UNETLoader"]["input"]["required"]["unet_name"][0]
    got = latents_of(comfy_host, GGUF_NAME, tmp_path)
    want = latents_of(comfy_host, TWIN_NAME, tmp_path)
    assert got.shape == want.shape and torch.isfinite(got).all() and want.abs().max() > 0.1
    assert (got - want).abs().max().item() <= 1e-4


def test_llava_gguf_is_listed_for_the_text_encoder(comfy_host):
    folder = os.path.join(comfy_host.models["models"], "text_encoders")
    path = os.path.join(folder, "llava-llama-3-8b-v1_1-Q4_K_M.gguf")
    if not os.path.exists(path):
        write_gguf(path, {"token_embd.weight": (torch.zeros(8, 32), "F16")}, arch="llama")
    spec = comfy_host.get("/object_info")["HyStreamTextEncoderLoader"]["input"]["required"]
    assert os.path.basename(path) in spec["llm_name"][0]
    assert os.path.basename(path) not in spec["clip_name"][0]
