"""Make the UI-format example workflows with the real ComfyUI frontend (never by hand).

Starts the pinned ComfyUI with the pack and tiny models under the standard file names, opens the
frontend in headless Chromium (Debian's /usr/bin/chromium driven by Playwright), loads each API workflow
of example_workflows/api/ with the frontend's own `loadApiJson`, lays it out, and saves what the
frontend exports (`graphToPrompt().workflow`) as example_workflows/<name>.json plus a <name>.jpg
thumbnail. Every widget value is therefore one the frontend accepted for its widget.

    .venv/bin/python scripts/export_ui_workflows.py [NAME ...]   (needs: apt install chromium; pip install playwright)
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
          "hunyuan15_i2v_lowvram": "HyStream: HunyuanVideo 1.5 image-to-video (480p, SigLIP, low VRAM)",
          "hunyuan_framepack_lowvram": "HyStream: FramePack long video from a start image (section by section, low VRAM)"}


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
    // the start image's preview grows its node once the picture has loaded: lay out with the sizes users see
    await new Promise(r => setTimeout(r, 2000));
    window.app.graph.setDirtyCanvas(true, true);
    await new Promise(r => setTimeout(r, 500));
    const graph = window.app.graph, nodes = graph._nodes, TITLE = LiteGraph.NODE_TITLE_HEIGHT;
    const X0 = 100, Y0 = 130, GAP_X = 60, GAP_Y = 40, ROW_GAP = 90;
    const level = new Map();
    const feeders = (n) => (n.inputs ?? []).map((_, i) => n.getInputNode(i)).filter(Boolean);
    const levelOf = (n) => {
        if (!level.has(n.id)) { const f = feeders(n); level.set(n.id, f.length ? 1 + Math.max(...f.map(levelOf)) : 0); }
        return level.get(n.id);
    };
    nodes.forEach(levelOf);
    const byOrder = (a, b) => a.order - b.order || a.id - b.id;
    // row 1: the nodes nothing feeds (loaders, inputs), side by side
    let x = X0, top = 0;
    for (const n of nodes.filter(n => level.get(n.id) === 0).sort(byOrder)) {
        n.pos = [x, Y0]; x += n.size[0] + GAP_X; top = Math.max(top, n.size[1]);
    }
    // row 2: the rest, one column per depth, left to right
    const y2 = Y0 + top + ROW_GAP + TITLE, depths = [...new Set([...level.values()])].filter(d => d > 0).sort((a, b) => a - b);
    x = X0;
    for (const d of depths) {
        let y = y2, width = 0;
        for (const n of nodes.filter(n => level.get(n.id) === d).sort(byOrder)) {
            n.pos = [x, y]; y += n.size[1] + TITLE + GAP_Y; width = Math.max(width, n.size[0]);
        }
        x += width + GAP_X;
    }
    for (const node of window.app.graph._nodes) {  // an example should reproduce: keep its seed
        for (const w of node.widgets ?? []) if (w.name === "control_after_generate") w.value = "fixed";
    }
    {
        const c = window.app.canvas, w = c.canvas.width / devicePixelRatio, h = c.canvas.height / devicePixelRatio;
        const right = Math.max(...window.app.graph._nodes.map(n => n.pos[0] + n.size[0]));
        const bottom = Math.max(...window.app.graph._nodes.map(n => n.pos[1] + n.size[1]));
        c.ds.offset = [20, 40];
        c.ds.scale = Math.min(1, Math.floor(20 * Math.min((w - 20) / (right + 20), (h - 20) / (bottom + 40))) / 20);
    }
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
            only = set(sys.argv[1:])  # names to export (default: all)
            for file in sorted(os.listdir(api_dir)):
                if only and file[: -len(".api.json")] not in only:
                    continue
                # a fresh page each: the frontend keeps the last workflow's previews by node id
                browser, page = open_frontend(p, host.url)
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
