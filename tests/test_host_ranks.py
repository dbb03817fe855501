"""The sampler's `gpus` option through the real ComfyUI (a CPU host: the ranks are CPU processes over gloo): the
node starts its worker processes for the run, the latents equal the one-process run bit for bit, Cancel stops
the workers with the run; GPU counts the heads do not divide go through ring attention."""

import time

import psutil
from safetensors.torch import load_file

from comfy_host import fetch_output, run_prompt
from test_host_api import video_of, workflow


def latent_run(host, tmp_path, name: str, graph: str = "hunyuan_t2v_lowvram", **overrides):
    wf = workflow(graph, **overrides)
    del wf["7"]  # the sampler's latent itself, saved exactly
    wf["8"] = {"class_type": "SaveLatent", "inputs": {"samples": ["6", 0], "filename_prefix": f"ranks/{name}"}}
    wf["19"] = {"class_type": "HyStreamTextEncode", "inputs": {"text_encoder": ["2", 0], "prompt": "blurry, static"}}
    wf["6"]["inputs"].update(negative=["19", 0], cfg=3.0)  # true CFG: a batch of two, text padding masked
    result = run_prompt(host, wf, timeout=600)
    if result["status"] != "success":
        return None, result
    item = result["history"]["outputs"]["8"]["latents"][0]
    return load_file(fetch_output(host, item, str(tmp_path / item["filename"])))["latent_tensor"], result


def workers_alive() -> list:
    return [p for p in psutil.process_iter(["cmdline"]) if any("worker_main(" in a for a in (p.info["cmdline"] or []))]


def test_two_gpus_give_the_one_gpu_latents(comfy_host, tmp_path):
    one, _ = latent_run(comfy_host, tmp_path, "one", **{"6.seed": 31, "6.gpus": 1})
    log_before = len(comfy_host.log())
    two, result = latent_run(comfy_host, tmp_path, "two", **{"6.seed": 31, "6.gpus": 2})
    assert two is not None, result["error"].get("exception_message")
    # 64 × 64 × 9 frames: 3 × 4 × 4 latent tokens, shared (a run that ignored gpus would hold all 48)
    assert "HyStream sampler: 4 steps on cpu (2 ranks, 24 of 48 image tokens each, ulysses 2)" in comfy_host.log()[log_before:]
    assert two.shape == one.shape and (two == one).all(), f"differs by {(two - one).abs().max().item():.2e}"
    steps = [m["data"]["value"] for m in result["messages"] if m["type"] == "progress" and m["data"]["node"] == "6"]
    assert steps[-1] == 4  # progress from rank 0, step by step
    assert not workers_alive()  # the run's workers ended with it


def test_two_gpus_give_the_one_gpu_latents_with_1_5(comfy_host, tmp_path):
    small = {"5.width": 64, "5.height": 64, "5.length": 9}  # 1.5: 16x compression, 3 x 4 x 4 latent tokens
    one, _ = latent_run(comfy_host, tmp_path, "one15", "hunyuan15_t2v_lowvram", **small, **{"6.seed": 3, "6.gpus": 1})
    two, result = latent_run(comfy_host, tmp_path, "two15", "hunyuan15_t2v_lowvram", **small, **{"6.seed": 3, "6.gpus": 2})
    assert two is not None, result["error"].get("exception_message")
    assert two.shape == one.shape and (two == one).all(), f"differs by {(two - one).abs().max().item():.2e}"


def test_cancel_stops_the_workers_and_the_next_run_works(comfy_host, tmp_path):
    state = {"sent": False, "workers": 0}

    def on_message(msg):
        if msg["type"] == "progress" and msg["data"]["node"] == "6" and not state["sent"]:
            state["workers"] = len(workers_alive())
            state["sent"] = True
            comfy_host.post("/interrupt", {})

    slow = workflow("hunyuan_t2v_lowvram", **{"6.steps": 400, "6.seed": 77, "6.gpus": 2})
    result = run_prompt(comfy_host, slow, on_message=on_message, timeout=600)
    assert state["sent"] and result["status"] == "interrupted"
    assert state["workers"] == 1  # one worker beside ComfyUI while it ran
    deadline = time.monotonic() + 20
    while workers_alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not workers_alive()
    after, result = latent_run(comfy_host, tmp_path, "after", **{"6.seed": 5, "6.gpus": 2})
    assert after is not None, result.get("error")


def test_three_gpus_for_two_heads_go_through_ring_attention(comfy_host, tmp_path):
    """3 does not divide the model's 2 heads: the keys go round a ring of 3 and the partial softmaxes merge, so the
    latents are the one-GPU ones within 1e-5 relative (true CFG: text padding masked in every ring step)."""
    one, _ = latent_run(comfy_host, tmp_path, "ring1", **{"6.seed": 12, "6.gpus": 1})
    log_before = len(comfy_host.log())
    three, result = latent_run(comfy_host, tmp_path, "ring3", **{"6.seed": 12, "6.gpus": 3})
    assert three is not None, result["error"].get("exception_message")
    assert "(3 ranks, 16 of 48 image tokens each, ring 3)" in comfy_host.log()[log_before:]
    rel = ((three - one).abs().max() / one.abs().max()).item()
    assert three.shape == one.shape and rel <= 1e-5, f"{rel:.2e} relative"
    assert not workers_alive()


def test_two_gpus_share_the_vae_tiles_and_give_the_one_gpu_frames(comfy_host, tmp_path):
    seen = []

    def on_message(msg):
        if msg["type"] == "progress" and msg["data"]["node"] == "7":
            seen.append((msg["data"]["max"], len(workers_alive())))

    videos = []
    for gpus in (1, 2):
        wf = workflow("hunyuan_t2v_lowvram", **{"6.seed": 8, "7.tile_size": 32, "7.tile_overlap": 16, "7.gpus": gpus})
        result = run_prompt(comfy_host, wf, on_message=on_message if gpus == 2 else None, timeout=600)
        assert result["status"] == "success", result.get("error")
        videos.append(video_of(comfy_host, result, tmp_path)[0])
    assert videos[0].shape == videos[1].shape and (videos[0] == videos[1]).all()
    # several tiles, one worker beside ComfyUI while they decode (it may have left before the last tile's message)
    assert max(tiles for tiles, _ in seen) > 1 and max(workers for _, workers in seen) == 1, seen
    assert not workers_alive()


def test_two_gpus_make_the_one_gpu_framepack_video(comfy_host, tmp_path):
    import json
    import os

    from comfy_host import upload
    from hystream.video_io import read_video
    from test_host_api import API, write_png

    upload(comfy_host, write_png(str(tmp_path / "start.png"), 40, 60, seed=9), "ranks_start.png")
    seen, videos = [], []
    for gpus in (1, 2):
        with open(os.path.join(API, "hunyuan_framepack_lowvram.api.json")) as f:
            wf = json.load(f)
        wf["1"]["inputs"]["dit_name"] = os.path.basename(comfy_host.models["framepack_dit"])
        wf["11"]["inputs"]["image"] = "ranks_start.png"
        wf["6"]["inputs"].update(width=64, height=48, seconds=0.5, window=2, steps=2, seed=4, gpus=gpus,
                                 filename_prefix=f"ranks/fp{gpus}")
        watch = (lambda m: seen.append(len(workers_alive())) if m["type"] == "progress" else None) if gpus == 2 else None
        result = run_prompt(comfy_host, wf, timeout=600, on_message=watch)
        assert result["status"] == "success", result.get("error")
        item = result["history"]["outputs"]["6"]["images"][0]
        videos.append(read_video(fetch_output(comfy_host, item, str(tmp_path / item["filename"])))[0])
    assert videos[0].shape == videos[1].shape == (25, 48, 64, 3)  # 3 sections
    assert (videos[0] == videos[1]).all()
    assert seen and max(seen) == 1  # one worker beside ComfyUI while the sections sampled
    assert not workers_alive()
