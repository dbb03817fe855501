"""Resources that run out for real, in one ComfyUI started as ComfyUI Desktop starts it (code apart from
the user's data: --base-directory, --user-directory, --input-directory, --output-directory) with the
low-VRAM user's --reserve-vram 1, under a page-lock limit, and with one output subfolder on a tiny
filesystem:

- disk: a 64 KiB tmpfs mounted over output/full inside a user + mount namespace (`unshare -rm`, no root
  needed), filled by a 64 KiB file, so a save there meets ENOSPC for real (no simulated error);
- page locking: RLIMIT_MEMLOCK of 64 KiB on the host process. HyStream pins only on CUDA
  (offload/host_buffer.py: cudaHostRegister, with a pageable fallback when refused) and a `--cpu` host never
  pins, so the refusal itself cannot happen here; the closest real thing is checked: the whole CPU path runs
  under the limit and gives the video it gives with the limit lifted;
- model files deleted or replaced while a prompt waits in the queue.

--lowvram and --novram cannot be given: they are mutually exclusive with --cpu in ComfyUI's argument parser
("not allowed with argument --cpu"), and without --cpu the pinned host needs a CUDA device at import.
"""

import contextlib
import os
import re
import resource
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from comfy_host import ComfyHost, outcome, run_prompt, upload
from hystream import comfy_server
from hystream.families.hunyuan_video.demo import TINY_DIT, build_models, random_dit_state_dict
from hystream.video_io import write_mp4
from test_host_api import workflow
from test_host_busy import DIT1, events, fresh, graph, queue, succeeded, video, wait, wait_until_sampling

LOCK_LIMIT = 64 * 1024
FILL = 'mount -t tmpfs -o size=64k tmpfs "$0" && head -c 65536 /dev/zero > "$0/filler" && exec "$@"'


def user_namespaces() -> bool:
    try:
        return subprocess.run(["unshare", "-rm", "true"], check=False, capture_output=True).returncode == 0
    except OSError:
        return False


@contextlib.contextmanager
def launched(prefix: list[str], extra: list[str], preexec):
    """ComfyHost.start with a command prefix, extra host flags and a preexec_fn for the server process."""
    real = subprocess.Popen

    def popen(args, **kwargs):
        return real([*prefix, *args, *extra], preexec_fn=preexec, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(comfy_server.subprocess, "Popen", popen)
        yield


@pytest.fixture(scope="module")
def host(comfy_snapshot, tmp_path_factory):
    root = tmp_path_factory.mktemp("resources")
    base = root / "Documents" / "ComfyUI"  # the Desktop's user-data folder
    models = build_models(str(base / "models"))
    dirs = {name: base / name for name in ("user", "input", "output")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    (dirs["output"] / "full").mkdir()
    small_fs = user_namespaces()
    prefix = ["unshare", "-rm", "sh", "-c", FILL, str(dirs["output"] / "full")] if small_fs else []
    extra = ["--reserve-vram", "1", *[a for n, d in dirs.items() for a in (f"--{n}-directory", str(d))]]
    hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)[1]

    def limits():  # soft limit only: the test lifts it again for the comparison run
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (LOCK_LIMIT, hard))

    h = ComfyHost(comfy_snapshot, str(root), base_directory=str(base))
    with launched(prefix, extra, limits):
        h.start()
    h.models, h.dirs, h.small_fs, h.lock_hard = models, dirs, small_fs, hard
    yield h
    h.stop()


def error_of(entry) -> dict:
    return events(entry).get("execution_error", {})


def test_desktop_folders_and_reserve_vram(host, tmp_path):
    """The flags reached the host, the video input is read from --input-directory and the video lands in
    --output-directory (not beside the code, not under the base directory's defaults)."""
    cmdline = Path(f"/proc/{host.proc.pid}/cmdline").read_text().split("\0")
    assert {"--reserve-vram", "--user-directory", "--input-directory", "--output-directory"} <= set(cmdline)
    clip = (torch.rand(1, 32, 32, 3) * 0.5 + torch.linspace(0, 1, 5)[:, None, None, None] * 0.5).clamp(0, 1)
    upload(host, write_mp4(clip, str(tmp_path / "clip.mp4")), "desktop_clip.mp4")
    assert (host.dirs["input"] / "desktop_clip.mp4").is_file()
    wf = workflow("hunyuan_v2v_lowvram", **{"10.video": "desktop_clip.mp4", "10.max_frames": 5, "6.steps": 2,
                                            "8.filename_prefix": "desktop/HyStream"})
    result = run_prompt(host, wf)
    assert outcome(result) == "ok", outcome(result)
    assert result["history"]["outputs"]["8"]["images"][0]["filename"] in os.listdir(host.dirs["output"] / "desktop")
    assert "Traceback" not in host.log()[len(host.startup_log):], host.log()[-3000:]


def test_a_full_disk_fails_the_save_cleanly(host):
    if not host.small_fs:
        pytest.skip("no user namespaces here (unshare -rm): no small filesystem to fill without root")
    full = f"/proc/{host.proc.pid}/root{host.dirs['output']}/full"  # the host's view: the tmpfs
    assert os.statvfs(full).f_blocks * os.statvfs(full).f_frsize == 64 * 1024
    result = run_prompt(host, graph(prefix="full/HyStream", seed=1))
    got = outcome(result)
    # names the cause (ffmpeg's OS-error line, not its vaguer last line) and the disk in its what-to-do
    assert got.startswith("ours") and "No space left on device" in got and "check free disk space" in got, got
    assert result["error"]["node_type"] == "HyStreamSaveVideo"
    assert os.listdir(full) == ["filler"]  # neither the mp4 nor its partial file
    after = run_prompt(host, graph(prefix="after_full/HyStream", seed=1))  # the host keeps serving
    assert outcome(after) == "ok", outcome(after)
    saved = host.dirs["output"] / "after_full" / after["history"]["outputs"]["8"]["images"][0]["filename"]
    assert saved.stat().st_size > 0


def test_a_page_lock_limit_changes_nothing_on_the_cpu(host, tmp_path):
    pid = host.proc.pid
    assert re.search(rf"Max locked memory\s+{LOCK_LIMIT}\s", Path(f"/proc/{pid}/limits").read_text())
    wf = graph(seed=21, text="a lighthouse beam sweeps the fog")
    limited = wait(host, queue(host, wf))
    assert succeeded(limited), error_of(limited)
    fresh(host)  # the second run computes again
    resource.prlimit(pid, resource.RLIMIT_MEMLOCK, (host.lock_hard, host.lock_hard))
    try:
        lifted = wait(host, queue(host, wf))
    finally:
        resource.prlimit(pid, resource.RLIMIT_MEMLOCK, (LOCK_LIMIT, host.lock_hard))
    assert succeeded(lifted) and "6" not in events(lifted).get("execution_cached", {}).get("nodes", [])
    assert np.array_equal(video(host, limited, tmp_path), video(host, lifted, tmp_path))


def test_a_model_file_deleted_or_replaced_while_queued(host, tmp_path):
    """A prompt validated at queue time, its DiT deleted before the loader runs: our error naming the file.
    Another's DiT replaced (an atomic rename, as download tools write): it runs the new file, consistently.
    A prompt in front holds the queue until both files changed, then is cancelled."""
    import websocket

    dits = host.models["models"] + "/diffusion_models"
    other = {"model.diffusion_model." + k: v for k, v in random_dit_state_dict(TINY_DIT, seed=9).items()}
    save_file(other, f"{dits}/replacement_reference.safetensors")
    reference = wait(host, queue(host, graph("replacement_reference.safetensors", seed=2)))
    assert succeeded(reference), error_of(reference)
    for name in ("doomed.safetensors", "swapped.safetensors"):
        os.link(f"{dits}/{DIT1}", f"{dits}/{name}")
    client = uuid.uuid4().hex
    ws = websocket.create_connection(f"ws://127.0.0.1:{host.port}/ws?clientId={client}", timeout=120)
    try:
        blocker = queue(host, graph(seed=3, steps=400), client)
        doomed = queue(host, graph("doomed.safetensors", seed=2), client)
        swapped = queue(host, graph("swapped.safetensors", seed=2), client)
        wait_until_sampling(ws, blocker)  # the other two wait behind it
    finally:
        ws.close()
    assert {p[1] for p in host.get("/queue")["queue_pending"]} == {doomed, swapped}
    os.remove(f"{dits}/doomed.safetensors")
    save_file(other, f"{dits}/.swapped.tmp")
    os.replace(f"{dits}/.swapped.tmp", f"{dits}/swapped.safetensors")
    host.post("/interrupt", {})
    assert "execution_interrupted" in events(wait(host, blocker))
    gone = error_of(wait(host, doomed))
    assert gone.get("exception_type", "").endswith("NotFoundError"), gone
    assert "doomed.safetensors" in gone["exception_message"] and "What to do" in gone["exception_message"]
    replaced = wait(host, swapped)
    assert succeeded(replaced), error_of(replaced)
    assert np.array_equal(video(host, replaced, tmp_path), video(host, reference, tmp_path))
    assert outcome(run_prompt(host, graph(seed=4))) == "ok"  # still serving
