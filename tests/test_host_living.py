"""Living inside current ComfyUI: inputs linked from other nodes (a switch feeding a model name or a video),
and the host started as ComfyUI Desktop starts it, with the user's data (--base-directory) apart from the
code, where the bundled tokenizers are."""

import os
import shutil

import torch

from comfy_host import ComfyHost, outcome, run_prompt, upload
from hystream.video_io import write_mp4
from test_host_api import workflow

SMALL = {"EmptyHunyuanLatentVideo": {"width": 64, "height": 48, "length": 5}, "HyStreamSampler": {"steps": 2}}


def small(wf):
    for n in wf.values():
        n["inputs"].update(SMALL.get(n["class_type"], {}))
    return wf


def switched(wf, node: str, key: str, value: str) -> dict:
    """Feed `node.key` from the test switch (output type "*") instead of its widget."""
    wf["90"] = {"class_type": "HyStreamTestSwitch", "inputs": {"value": value}}
    wf[node]["inputs"][key] = ["90", 0]
    return wf


def test_linked_model_names_queue_and_run(comfy_host):
    wf = small(workflow("hunyuan_t2v_lora_lowvram"))
    wf = switched(wf, "1", "dit_name", "hunyuan_video_t2v_720p_bf16.safetensors")
    wf["91"] = {"class_type": "HyStreamTestSwitch", "inputs": {"value": "clip_l.safetensors"}}
    wf["2"]["inputs"]["clip_name"] = ["91", 0]
    wf["92"] = {"class_type": "HyStreamTestSwitch", "inputs": {"value": "hunyuan_video_demo_lora.safetensors"}}
    wf["9"]["inputs"]["lora_name"] = ["92", 0]
    assert outcome(run_prompt(comfy_host, wf)) == "ok"


def test_a_linked_name_that_does_not_exist_is_our_error_at_run_time(comfy_host):
    wf = switched(small(workflow("hunyuan_t2v_lowvram")), "3", "vae_name", "no_such_vae.safetensors")
    got = outcome(run_prompt(comfy_host, wf))
    assert got.startswith("ours") and "no_such_vae.safetensors" in got and "vae_name" in got, got
    wf = switched(small(workflow("hunyuan_t2v_lowvram")), "1", "dit_name", "../../../etc/passwd")
    got = outcome(run_prompt(comfy_host, wf))
    assert got.startswith("ours") and "dit_name" in got, got


def test_a_linked_video_name_queues_and_runs(comfy_host, tmp_path):
    clip = torch.linspace(0, 1, 9)[:, None, None, None].expand(9, 48, 64, 3).contiguous()
    upload(comfy_host, write_mp4(clip, str(tmp_path / "v.mp4")), "linked_video.mp4")
    wf = switched(small(workflow("hunyuan_v2v_lowvram")), "10", "video", "linked_video.mp4")
    assert outcome(run_prompt(comfy_host, wf)) == "ok"
    wf = switched(small(workflow("hunyuan_v2v_lowvram")), "10", "video", "/etc/hostname")
    got = outcome(run_prompt(comfy_host, wf))
    assert got.startswith("ours") and "input folder" in got, got


def test_desktop_layout_finds_the_bundled_tokenizers(comfy_snapshot, tmp_path):
    """ComfyUI Desktop: code in one place, models/input/output/custom_nodes under --base-directory. The
    text encoders have no tokenizer beside them, so the loader must find ComfyUI's bundled ones beside the
    code (folder_paths.__file__), not under the base directory."""
    from hystream.families.hunyuan_video.demo import build_models, write_tiny_clip_tokenizer, write_tiny_llama_tokenizer

    base = tmp_path / "user-data"
    models = build_models(str(base / "models"))
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"):
        os.remove(os.path.join(models["models"], "text_encoders", name))
    code = tmp_path / "ComfyUI-code"
    shutil.copytree(comfy_snapshot, code, symlinks=True, ignore=shutil.ignore_patterns("tests", "tests-unit", ".git"))
    for folder, write in ((code / "comfy" / "text_encoders" / "llama_tokenizer", write_tiny_llama_tokenizer),
                          (code / "comfy" / "sd1_tokenizer", write_tiny_clip_tokenizer)):
        shutil.rmtree(folder, ignore_errors=True)
        write(str(folder))  # stand-ins of ComfyUI's bundled tokenizers, sized for the tiny encoders
    host = ComfyHost(str(code), str(tmp_path / "run"), base_directory=str(base)).start()
    try:
        result = run_prompt(host, small(workflow("hunyuan_t2v_lowvram")))
        assert outcome(result) == "ok", outcome(result)
        assert os.listdir(base / "output")  # the video went to the user-data folder, not beside the code
    finally:
        host.stop()
