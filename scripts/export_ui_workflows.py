"""Make the UI-format example workflows with the real ComfyUI frontend (never by hand).

Starts the pinned ComfyUI with the pack and tiny models under the standard file names, opens the
frontend in headless Chromium (Debian's /usr/bin/chromium driven by Playwright), loads each API workflow
of example_workflows/api/ with the frontend's own `loadApiJson`, lays it out, and saves what the
frontend exports (`graphToPrompt().workflow`) as example_workflows/<name>.json plus a <name>.jpg
thumbnail. Every widget value is therefore one the frontend accepted for its widget.

    .venv/bin/python scripts/export_ui_workflows.py        (needs: apt install chromium; pip install playwright)
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))

from comfy_host import ComfyHost, find_comfyui, upload

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
TITLES = {"hunyuan_t2v_lowvram": "HyStream: HunyuanVideo text-to-video (low VRAM)",
          "hunyuan_t2v_lora_lowvram": "HyStream: HunyuanVideo text-to-video + LoRA (low VRAM)",
          "hunyuan_v2v_lowvram": "HyStream: HunyuanVideo video-to-video (low VRAM)",
          "hunyuan_t2v_stepcache_lowvram": "HyStream: HunyuanVideo text-to-video + step cache (TeaCache, low VRAM)",
          "hunyuan_i2v_lowvram": "HyStream: HunyuanVideo image-to-video (HunyuanVideo-I2V / SkyReels-I2V, low VRAM)",
          "hunyuan15_t2v_lowvram": "HyStream: HunyuanVideo 1.5 text-to-video (480p, low VRAM)",
          "hunyuan15_i2v_lowvram": "HyStream: HunyuanVideo 1.5 image-to-video (480p, SigLIP, low VRAM)"}


def start_host(root: str) -> ComfyHost:
    import torch

    from hystream.families.hunyuan_video.demo import build_models
    from hystream.families.hunyuan_video_15.demo import build_models as build_models_15
    from hystream.video_io import write_mp4

    models = build_models(os.path.join(root, "models"))
    build_models_15(os.path.join(root, "models"))
    folders = {k: os.path.join(models["models"], k) for k in ("diffusion_models", "text_encoders", "vae", "loras", "clip_vision")}
    host = ComfyHost(find_comfyui(), root, folders).start()
    clip = torch.linspace(0, 1, 9)[:, None, None, None].expand(9, 64, 64, 3).contiguous()
    upload(host, write_mp4(clip, os.path.join(root, "input_video.mp4")), "input_video.mp4")
    from test_host_api import write_png

    upload(host, write_png(os.path.join(root, "start_image.png"), 480, 848), "start_image.png")
    return host


def open_frontend(playwright, url: str):
    browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
    page = browser.new_page(viewport={"width": 1600, "height": 900})
    page.goto(url)
    page.wait_for_function("window.app && window.app.graph && window.app.vueAppReady !== false", timeout=120000)
    time.sleep(2)
    page.keyboard.press("Escape")  # the first-run template browser
    time.sleep(0.5)
    return browser, page


LOAD_AND_EXPORT = """async ([api, name]) => {
    await window.app.loadApiJson(api, name);
    window.app.graph.arrange?.();
    for (const node of window.app.graph._nodes) {  // an example should reproduce: keep its seed
        for (const w of node.widgets ?? []) if (w.name === "control_after_generate") w.value = "fixed";
    }
    window.app.canvas.ds.scale = 0.6;
    window.app.canvas.ds.offset = [20, 40];
    window.app.graph.setDirtyCanvas(true, true);
    const p = await window.app.graphToPrompt();
    // JSON.stringify drops keys whose value is undefined; Playwright's own serialisation would turn them
    // into null, which the frontend's schema rejects on load ("Expected array, received null ...")
    return JSON.stringify(p.workflow);
}"""


def main() -> None:
    from playwright.sync_api import sync_playwright

    api_dir = os.path.join(REPO, "example_workflows", "api")
    root = tempfile.mkdtemp(prefix="hystream-export-")
    host = start_host(root)
    try:
        with sync_playwright() as p:
            browser, page = open_frontend(p, host.url)
            for file in sorted(os.listdir(api_dir)):
                name = file[: -len(".api.json")]
                with open(os.path.join(api_dir, file)) as f:
                    api = json.load(f)
                workflow = json.loads(page.evaluate(LOAD_AND_EXPORT, [api, name]))
                workflow.setdefault("extra", {})["info"] = {"title": TITLES.get(name, name), "source": "HyStream"}
                with open(os.path.join(REPO, "example_workflows", f"{name}.json"), "w") as f:
                    json.dump(workflow, f, indent=2)
                    f.write("\n")
                time.sleep(0.5)
                page.keyboard.press("Escape")
                page.locator("#graph-canvas").screenshot(path=os.path.join(REPO, "example_workflows", f"{name}.jpg"),
                                                         type="jpeg", quality=70)
                print("exported", name, len(workflow["nodes"]), "nodes")
            browser.close()
    finally:
        host.stop()


if __name__ == "__main__":
    main()
