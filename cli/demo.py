"""`demo`: tiny random models through the real ComfyUI and the example workflow, or headless without one."""

from __future__ import annotations

import json
import os
import tempfile
import time

from .generate import cmd_generate
from .parser import build_parser

DEMO_SIZE = {"width": 128, "height": 96, "frames": 17, "steps": 8}


def demo_workflow(repo: str) -> dict:
    with open(os.path.join(repo, "example_workflows", "api", "hunyuan_t2v_lowvram.api.json")) as f:
        wf = json.load(f)
    for node in wf.values():  # tiny random models: a small video, few steps
        if node["class_type"] == "EmptyHunyuanLatentVideo":
            node["inputs"].update(width=DEMO_SIZE["width"], height=DEMO_SIZE["height"], length=DEMO_SIZE["frames"])
        if node["class_type"] == "HyStreamSampler":
            node["inputs"].update(steps=DEMO_SIZE["steps"])
        if node["class_type"] == "HyStreamSaveVideo":
            node["inputs"].update(filename_prefix="hystream_demo")
    return wf


def cmd_demo(args) -> dict:
    from ..comfy_server import REPO, ComfyHost, fetch_output, find_comfyui
    from ..families import registry

    out_dir = os.path.abspath(args.out)
    os.makedirs(out_dir, exist_ok=True)
    print("building tiny random models in the real layouts …")
    models = registry.default().write_demo_models(os.path.join(out_dir, "models"))
    out = os.path.join(out_dir, "hystream_demo.mp4")
    snapshot = None if args.headless else find_comfyui()
    if snapshot is None:
        print("running the same models through the headless pipeline" if args.headless else
              "no ComfyUI found (set COMFYUI_PATH, or place it at ../shared/comfyui): running the same models "
              "through the headless pipeline instead")
        gen = build_parser().parse_args([  # generate's own defaults for everything not named here
            "generate", "--dit", models["dit"], "--llm", models["llm"], "--clip", models["clip"], "--vae", models["vae"],
            "--prompt", args.prompt, "--lora", f"{models['lora']}:1.0", "--width", str(DEMO_SIZE["width"]),
            "--height", str(DEMO_SIZE["height"]), "--frames", str(DEMO_SIZE["frames"]),
            "--steps", str(DEMO_SIZE["steps"]), "--denoise", "1.0", "--out", out])
        gen.vram_budget = None  # tiny models: no residency planning
        return dict(cmd_generate(gen), command="demo", host=None)

    print(f"starting ComfyUI from {snapshot} with HyStream installed for this run …")
    folders = {k: os.path.join(models["models"], k) for k in ("diffusion_models", "text_encoders", "vae", "loras", "clip_vision")}
    host = ComfyHost(snapshot, tempfile.mkdtemp(prefix="hystream-demo-"), folders)
    t0 = time.perf_counter()
    host.start()
    try:
        print(f"ComfyUI is up at {host.url} ({time.perf_counter() - t0:.0f} s); queueing the example workflow …")
        wf = demo_workflow(REPO)
        wf["4"]["inputs"]["prompt"] = args.prompt
        from ..comfy_server import queue_and_wait

        t1 = time.perf_counter()
        entry = queue_and_wait(host, wf, report=lambda s: print(f"\r  running … {s:.0f} s", end="", flush=True))
        print()
        item = entry["outputs"]["8"]["images"][0]
        fetch_output(host, item, out)
        log = host.log()
    finally:
        host.stop()
    from ..video_io import read_video

    frames, fps = read_video(out)
    lines = [line for line in log.splitlines() if "HyStream sampler:" in line]
    print(f"wrote {out}: {frames.shape[0]} frames of {frames.shape[2]}x{frames.shape[1]} at {fps:g} fps")
    if lines:
        print(lines[-1].strip())
    return {"command": "demo", "host": snapshot, "out": out, "frames": frames.shape[0], "width": frames.shape[2],
            "height": frames.shape[1], "seconds": round(time.perf_counter() - t1, 2),
            "sampler_log": lines[-1].strip() if lines else None}
