"""A busy ComfyUI queue, as a shared server or a batch script fills it: prompts queued back to back with
different DiTs, a native ComfyUI graph between ours, Cancel while another prompt waits, the same prompt
twice (answered from ComfyUI's cache), and twenty mixed prompts with the server's memory bounded.
Outputs are compared exactly with the same graph run alone: the pipeline is deterministic (seeded noise
on the CPU), so any state one prompt leaves for the next shows up as a different video."""

import json
import os
import re
import time
import uuid

import numpy as np
import pytest
import websocket
from PIL import Image
from safetensors.torch import save_file

from comfy_host import fetch_output
from hystream.families.hunyuan_video.demo import TINY_DIT, random_dit_state_dict
from hystream.video_io import read_video
from test_host_api import workflow

DIT1, DIT2 = "hunyuan_video_t2v_720p_bf16.safetensors", "hunyuan_busy_second_dit.safetensors"


def graph(dit=DIT1, seed=0, steps=1, width=32, height=32, text="a kettle boils on a stove", prefix="busy"):
    """The T2V example at a tiny size: one 32x32 frame, one step (the CPU is shared)."""
    wf = workflow("hunyuan_t2v_lowvram", **{"1.dit_name": dit, "4.prompt": text, "6.seed": seed, "6.steps": steps,
                                            "8.filename_prefix": prefix})
    wf["5"]["inputs"].update(width=width, height=height, length=1)
    return wf


def native_graph(color: int, prefix: str) -> dict:
    """ComfyUI's own nodes, no model: a batch of images scaled up (RAM the host allocates), inverted, saved."""
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": 256, "height": 256, "batch_size": 4, "color": color}},
            "2": {"class_type": "ImageScaleBy", "inputs": {"image": ["1", 0], "upscale_method": "nearest-exact", "scale_by": 2.0}},
            "3": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
            "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": prefix}}}


def queue(host, wf, client="busy-tests") -> str:
    code, answer = host.post("/prompt", {"prompt": wf, "client_id": client})
    assert code == 200, answer
    return answer["prompt_id"]


def wait(host, prompt_id, timeout=180) -> dict:
    """The prompt's history entry once ComfyUI finished it (success, error or interrupted)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        entry = host.get(f"/history/{prompt_id}").get(prompt_id)
        if entry and entry.get("status", {}).get("completed") is not None:
            return entry
        time.sleep(0.1)
    raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s")


def events(entry) -> dict:
    return {kind: data for kind, data in entry["status"]["messages"]}


def succeeded(entry) -> bool:
    return entry["status"]["status_str"] == "success" and entry["status"]["completed"]


def video(host, entry, tmp_path):
    item = entry["outputs"]["8"]["images"][0]
    frames, _ = read_video(fetch_output(host, item, str(tmp_path / f"{uuid.uuid4().hex}.mp4")))
    return frames


def wait_until_sampling(ws, prompt_id) -> None:
    """Read the websocket until the prompt's sampler (node 6) reports its first step."""
    while True:
        raw = ws.recv()
        msg = json.loads(raw) if isinstance(raw, str) else {}  # bytes: previews
        data = msg.get("data", {})
        if msg.get("type") == "progress" and data.get("prompt_id") == prompt_id and data.get("node") == "6":
            return


def fresh(host):
    """Empty ComfyUI's cache (the UI's "Free model and node cache"): the next prompt runs every node. The
    worker reads that flag when idle or after its next prompt: a trivial native prompt makes sure it was read."""
    assert host.post("/free", {"free_memory": True, "unload_models": True})[0] == 200
    flush = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
             "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    assert succeeded(wait(host, queue(host, flush)))


@pytest.fixture(scope="module")
def alone(comfy_host, tmp_path_factory):
    """A second tiny DiT beside the first, and each graph's video when it runs alone on a fresh cache."""
    sd = random_dit_state_dict(TINY_DIT, seed=7)
    save_file({"model.diffusion_model." + k: v for k, v in sd.items()},
              os.path.join(comfy_host.models["models"], "diffusion_models", DIT2))
    tmp = tmp_path_factory.mktemp("alone")
    out = {}
    for dit in (DIT1, DIT2):
        fresh(comfy_host)
        entry = wait(comfy_host, queue(comfy_host, graph(dit)))
        assert succeeded(entry), entry["status"]
        out[dit] = video(comfy_host, entry, tmp)
    assert not np.array_equal(out[DIT1], out[DIT2])  # two models: two videos (else the check below is empty)
    return out


def test_two_dits_back_to_back_give_their_alone_videos(comfy_host, alone, tmp_path):
    fresh(comfy_host)
    first, second = queue(comfy_host, graph(DIT1)), queue(comfy_host, graph(DIT2))
    a, b = wait(comfy_host, first), wait(comfy_host, second)
    assert succeeded(a) and succeeded(b), (a["status"], b["status"])
    assert "6" not in events(b).get("execution_cached", {}).get("nodes", [])  # really sampled again
    assert np.array_equal(video(comfy_host, a, tmp_path), alone[DIT1])
    assert np.array_equal(video(comfy_host, b, tmp_path), alone[DIT2])


def test_a_native_graph_between_ours_in_one_queue(comfy_host, alone, tmp_path):
    """ComfyUI's own nodes allocate in the same process between two of our prompts; all three finish, the
    native images are right, and our videos are still the alone ones."""
    fresh(comfy_host)
    ids = [queue(comfy_host, graph(DIT1)), queue(comfy_host, native_graph(0x204060, "busy_native")),
           queue(comfy_host, graph(DIT2))]
    ours1, native, ours2 = (wait(comfy_host, i) for i in ids)
    assert succeeded(ours1) and succeeded(native) and succeeded(ours2)
    images = native["outputs"]["4"]["images"]
    assert len(images) == 4
    pixels = np.asarray(Image.open(fetch_output(comfy_host, images[0], str(tmp_path / "native.png"))))
    assert pixels.shape == (512, 512, 3) and (pixels == [255 - 0x20, 255 - 0x40, 255 - 0x60]).all()
    assert np.array_equal(video(comfy_host, ours1, tmp_path), alone[DIT1])
    assert np.array_equal(video(comfy_host, ours2, tmp_path), alone[DIT2])


def test_cancel_the_running_prompt_while_another_waits(comfy_host, alone, tmp_path):
    client = uuid.uuid4().hex
    ws = websocket.create_connection(f"ws://127.0.0.1:{comfy_host.port}/ws?clientId={client}", timeout=120)
    try:
        slow = queue(comfy_host, graph(DIT2, seed=3, steps=400), client)
        waiting = queue(comfy_host, graph(DIT1), client)
        wait_until_sampling(ws, slow)  # Cancel once the slow prompt samples (the other is queued by then)
        assert comfy_host.get("/queue")["queue_pending"][0][1] == waiting
        assert comfy_host.post("/interrupt", {})[0] == 200
    finally:
        ws.close()
    cancelled, after = wait(comfy_host, slow), wait(comfy_host, waiting)
    assert "execution_interrupted" in events(cancelled), cancelled["status"]
    assert "8" not in cancelled.get("outputs", {})
    assert succeeded(after), after["status"]
    assert np.array_equal(video(comfy_host, after, tmp_path), alone[DIT1])


def test_the_same_prompt_twice_comes_from_comfyuis_cache(comfy_host, alone, tmp_path):
    wf = graph(DIT1, text="a paper boat drifts down a gutter", seed=11)
    start = time.time()
    first = wait(comfy_host, queue(comfy_host, wf))
    first_s = time.time() - start
    start = time.time()
    second = wait(comfy_host, queue(comfy_host, wf))
    second_s = time.time() - start
    assert succeeded(first) and succeeded(second)
    assert set(events(second)["execution_cached"]["nodes"]) == set(wf)  # no node of ours ran again
    assert second_s < max(1.0, first_s / 2), (first_s, second_s)  # wide: the run itself is seconds
    assert second["outputs"]["8"] == first["outputs"]["8"]
    assert np.array_equal(video(comfy_host, second, tmp_path), video(comfy_host, first, tmp_path))


def test_a_reused_loader_reports_each_runs_own_copies(comfy_host, alone):
    """A second seed reuses ComfyUI's cached DiT loader output: the sampler's counters are that run's, not a sum."""
    counts = []
    for seed in (21, 22):
        log_before = len(comfy_host.log())
        entry = wait(comfy_host, queue(comfy_host, graph(DIT1, seed=seed, text="a kite over a beach")))
        assert succeeded(entry)
        lines = re.findall(r"HyStream sampler: .*", comfy_host.log()[log_before:])
        assert len(lines) == 1, lines
        counts.append(int(re.search(r"in (\d+) copies", lines[0]).group(1)))
    assert counts[0] == counts[1] > 0, counts


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def test_twenty_mixed_prompts_keep_the_servers_memory_bounded(comfy_host, alone):
    """Both DiTs, two sizes, 1-2 steps, other prompts and seeds, a native graph every fifth. RSS is read after
    the first five (the allocator's pools, torch's and ComfyUI's caches are warm by then) and at the end.
    Bound 300 MB: a tiny DiT kept per prompt adds 21 MB (its bf16 file; 42 MB in the CPU's fp32), > 300 MB
    over fifteen prompts, while allocator noise and ComfyUI's history of small entries stay far below it."""
    rss = []
    for i in range(20):
        if i % 5 == 4:
            wf = native_graph(i * 0x030303, f"mixed_native_{i}")
        else:
            wf = graph((DIT1, DIT2)[i % 2], seed=100 + i, steps=1 + (i % 7 == 0), width=(32, 48)[i % 3 == 0],
                       text=("a kettle boils on a stove", f"scene number {i}")[i % 4 == 1], prefix=f"mixed_{i}")
        entry = wait(comfy_host, queue(comfy_host, wf))
        assert succeeded(entry), (i, entry["status"])
        if i in (4, 19):
            rss.append(rss_bytes(comfy_host.proc.pid))
    growth = rss[1] - rss[0]
    assert growth < 300 * 2 ** 20, f"RSS grew by {growth / 2 ** 20:.0f} MB over 15 prompts ({rss})"
