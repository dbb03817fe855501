"""The check a workflow sharer needs: each UI workflow dropped on the real ComfyUI frontend (headless
Chromium, loaded through the same `handleFile` a drop uses) loads with no toast, alert or dialog of any
kind, no console error, no missing node type, no broken link, every widget value fitting its widget, and
queues as exactly the API workflow it was exported from, and opens readable: in a 1600 × 1000 window at 60 %
zoom or more (below that the frontend draws nodes as blank boxes), both in its saved view and after the
frontend's "fit view". A control case proves the checker sees the frontend's schema alert; a run from the
editor shows the LoRA node's report on the node."""

import json
import os
import shutil
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(HERE, "..", "example_workflows")
UI = sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".json"))
CHROMIUM = "/usr/bin/chromium"
VIEWPORT = {"width": 1600, "height": 1000}
CANVAS = (1536, 922)  # what the pinned frontend leaves of that window to the canvas (side bar, top bar)
MIN_ZOOM = 0.6
# the frontend's fit view (fitToBounds) fills 75 % of the canvas with the nodes' bounds padded by 10 units;
# a node's rectangle starts a title bar (LiteGraph.NODE_TITLE_HEIGHT) above its pos
FIT_FILL, FIT_PADDING, TITLE = 0.75, 10, 30
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

DROP = """async ([text, name]) => {
    const file = new File([text], name, {type: "application/json"});
    await window.app.handleFile(file);
}"""

NOTICES = """() => {
    const visible = (e) => !!(e.offsetWidth || e.offsetHeight || e.getClientRects().length);
    const text = (e) => (e.innerText || e.textContent || "").trim().slice(0, 500);
    return {
        toasts: [...document.querySelectorAll(".p-toast-message")].filter(visible).map(text),
        dialogs: [...document.querySelectorAll(".p-dialog, [role=dialog], [role=alertdialog]")].filter(visible).map(text),
    };
}"""

DISMISS = """() => {
    for (const b of document.querySelectorAll(".p-toast-message .p-toast-close-button, .p-toast-icon-close")) b.click();
    for (const b of document.querySelectorAll(".p-dialog .p-dialog-close-button, .p-dialog-header-close")) b.click();
}"""

CHECK = """async () => {
    const app = window.app, graph = app.graph;
    const missing = graph._nodes.map(n => n.type).filter(t => !LiteGraph.registered_node_types[t]);
    const broken = [];
    for (const link of Object.values(graph.links ?? {})) {
        if (!link) continue;
        const a = graph.getNodeById(link.origin_id), b = graph.getNodeById(link.target_id);
        if (!a || !b || !a.outputs?.[link.origin_slot] || b.inputs?.[link.target_slot]?.link !== link.id)
            broken.push(link.id);
    }
    const misfit = [];
    for (const node of graph._nodes) for (const w of node.widgets ?? []) {
        const o = w.options ?? {};
        if (w.type === "combo" && Array.isArray(o.values) && !o.values.includes(w.value)) misfit.push(`${node.type}.${w.name}=${w.value}`);
        if (w.type === "number" && ((o.min !== undefined && w.value < o.min) || (o.max !== undefined && w.value > o.max)))
            misfit.push(`${node.type}.${w.name}=${w.value}`);
    }
    const prompt = (await app.graphToPrompt()).output;
    return {missing, broken, misfit, prompt, nodes: graph._nodes.length};
}"""


VIEW = """async () => {
    const c = window.app.canvas, ds = c.ds, graph = window.app.graph;
    const w = c.canvas.width / devicePixelRatio, h = c.canvas.height / devicePixelRatio;
    const outside = graph._nodes.filter(n => {
        const [x, y, bw, bh] = n.boundingRect;
        const [sx, sy] = ds.convertOffsetToCanvas([x, y]), [ex, ey] = ds.convertOffsetToCanvas([x + bw, y + bh]);
        return sx < 0 || sy < 0 || ex > w || ey > h;
    }).map(n => n.type);
    const saved = ds.scale;
    c.deselectAll?.();
    await window.app.extensionManager.command.execute("Comfy.Canvas.FitView");  // the "." key
    await new Promise(r => setTimeout(r, 1000));  // it animates for 350 ms
    return {canvas: [w, h], saved, outside, fitted: ds.scale};
}"""


def node_rects(workflow: dict) -> list[tuple[float, float, float, float]]:
    """Each node's (left, top, right, bottom) in canvas units, title bar included."""
    return [(n["pos"][0], n["pos"][1] - TITLE, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
            for n in workflow["nodes"]]


def fit_zoom(workflow: dict) -> float:
    """The zoom the frontend's fit view gives this workflow in VIEWPORT's canvas (its fitToBounds formula)."""
    rects = node_rects(workflow)
    width = max(r[2] for r in rects) - min(r[0] for r in rects) + 2 * FIT_PADDING
    height = max(r[3] for r in rects) - min(r[1] for r in rects) + 2 * FIT_PADDING
    return FIT_FILL * min(CANVAS[0] / max(width, 300), CANVAS[1] / max(height, 300))


@pytest.mark.parametrize("name", UI)
def test_ui_workflow_is_laid_out_to_open_at_60_percent_or_more(name):
    """From the file alone (no browser needed): all nodes fit the canvas of a 1600 × 1000 window divided by
    0.6, less the fit view's margins; none overlaps another; the saved view opens at 60 % or more."""
    with open(os.path.join(EXAMPLES, name)) as f:
        workflow = json.load(f)
    assert fit_zoom(workflow) >= MIN_ZOOM, f"{name}: fit view at {fit_zoom(workflow):.2f}; lay it out in two rows"
    rects = node_rects(workflow)
    overlaps = [(a, b) for i, a in enumerate(rects) for b in rects[i + 1:]
                if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]]
    assert overlaps == []
    assert workflow["extra"]["ds"]["scale"] >= MIN_ZOOM


@pytest.fixture(scope="module")
def page(comfy_host, tmp_path_factory):
    if not os.path.exists(CHROMIUM) or shutil.which("chromium") is None:
        reason = "needs Debian's chromium (apt install chromium) for the frontend check"
        if os.environ.get("HYSTREAM_REQUIRE_HOST") or os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    import torch
    from playwright.sync_api import sync_playwright

    from comfy_host import upload
    from hystream.video_io import write_mp4
    from test_host_api import write_png

    clip = torch.linspace(0, 1, 9)[:, None, None, None].expand(9, 64, 64, 3).contiguous()
    tmp = tmp_path_factory.mktemp("ui")
    upload(comfy_host, write_mp4(clip, str(tmp / "v.mp4")), "input_video.mp4")
    upload(comfy_host, write_png(str(tmp / "start.png"), 64, 64), "start_image.png")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport=VIEWPORT)
        page.errors, page.alerts = [], []
        page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: page.errors.append(str(e)))
        page.on("dialog", lambda d: (page.alerts.append(f"{d.type}: {d.message}"), d.dismiss()))
        page.goto(comfy_host.url)
        page.wait_for_function("window.app && window.app.graph", timeout=120000)
        time.sleep(2)
        page.keyboard.press("Escape")  # the first-run template browser
        time.sleep(0.5)
        page.evaluate(DISMISS)
        yield page
        browser.close()


def drop(page, workflow: dict, name: str) -> dict:
    """Drop a workflow file on the editor; return every toast, alert and dialog that follows."""
    page.keyboard.press("Escape")
    page.evaluate(DISMISS)
    time.sleep(0.3)
    page.errors.clear()
    page.alerts.clear()
    page.evaluate(DROP, [json.dumps(workflow), name])
    time.sleep(1.5)
    notices = page.evaluate(NOTICES)
    notices["alerts"] = list(page.alerts)
    return notices


def test_the_checker_sees_the_frontends_schema_alert(page):
    """Control: a workflow with the nulls the old exporter wrote must raise the alert the check looks for."""
    with open(os.path.join(EXAMPLES, UI[0])) as f:
        workflow = json.load(f)
    workflow["floatingLinks"] = None
    workflow.setdefault("extra", {})["reroutes"] = None
    notices = drop(page, workflow, "broken.json")
    assert any("zod" in t.lower() or "invalid workflow" in t.lower() for t in notices["toasts"] + notices["dialogs"]), notices


@pytest.mark.parametrize("name", UI)
def test_ui_workflow_loads_cleanly_in_the_frontend(page, name):
    with open(os.path.join(EXAMPLES, name)) as f:
        workflow = json.load(f)
    with open(os.path.join(EXAMPLES, "api", name.replace(".json", ".api.json"))) as f:
        api = json.load(f)
    assert "class_type" not in json.dumps(workflow)[:200]  # UI format, not API format
    notices = drop(page, workflow, name)
    assert notices == {"toasts": [], "dialogs": [], "alerts": []}, notices
    assert page.errors == [], page.errors
    result = page.evaluate(CHECK)
    assert result["missing"] == [] and result["broken"] == [] and result["misfit"] == [], result
    assert result["nodes"] == len(api)
    # the upload widget's preview is the frontend's own (ComfyUI ignores it): not part of the contract
    queued = {k: {"class_type": v["class_type"], "inputs": {i: x for i, x in v["inputs"].items() if not i.endswith("-preview")}}
              for k, v in result["prompt"].items()}
    assert queued == {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in api.items()}
    assert os.path.exists(os.path.join(EXAMPLES, name.replace(".json", ".jpg")))  # the template thumbnail
    view = page.evaluate(VIEW)  # last: fitting the view changes it
    assert view["canvas"] == list(CANVAS), view  # the window the file check assumes
    assert view["saved"] >= MIN_ZOOM and view["outside"] == [], view  # the saved view shows every node
    assert view["fitted"] >= MIN_ZOOM, view  # and so does the frontend's own fit view
    assert view["fitted"] == pytest.approx(fit_zoom(workflow), abs=0.01), view  # the file check's formula


QUEUE_SMALL = """async () => {
    for (const node of window.app.graph._nodes) for (const w of node.widgets ?? []) {
        if (node.type === "EmptyHunyuanLatentVideo" && w.name in {width: 1, height: 1}) w.value = 64;
        if (node.type === "EmptyHunyuanLatentVideo" && w.name === "length") w.value = 5;
        if (node.type === "HyStreamSampler" && w.name === "steps") w.value = 2;
    }
    await window.app.queuePrompt(0, 1);
}"""

REPORT = """() => {
    const node = window.app.graph._nodes.find(n => n.type === "HyStreamLoRA");
    return node?.widgets?.find(w => w.name === "hystream_report")?.value ?? null;
}"""


def test_lora_report_shows_on_the_node_after_a_run(page):
    name = "hunyuan_t2v_lora_lowvram.json"
    with open(os.path.join(EXAMPLES, name)) as f:
        workflow = json.load(f)
    assert drop(page, workflow, name) == {"toasts": [], "dialogs": [], "alerts": []}
    page.evaluate(QUEUE_SMALL)
    page.wait_for_function(REPORT, timeout=180000)
    report = page.evaluate(REPORT)
    assert "hunyuan_video_demo_lora.safetensors" in report and "tensors applied" in report, report
    saved = page.evaluate("async () => JSON.stringify((await window.app.graphToPrompt()).workflow)")
    assert "tensors applied" not in saved  # the report is not saved into the workflow
    assert page.errors == [], page.errors
