"""Inside the real ComfyUI: the pack (linked under a folder name other than 'hystream') imports
cleanly at start-up and registers its ten nodes. (The snapshot's own audio nodes fail to import for want
of torchaudio, which has no build for this torch; that is ComfyUI's, not ours.)"""

import re

from comfy_host import PACK_FOLDER


def tracebacks(log: str) -> list[str]:
    """Each traceback: its header, the indented frames, and the exception line."""
    return re.findall(r"Traceback \(most recent call last\):\n(?:[ \t].*\n)*.*", log)


def test_pack_imports_inside_comfyui(comfy_host):
    log = comfy_host.startup_log
    loaded = [line for line in log.splitlines() if line.rstrip().endswith("custom_nodes/" + PACK_FOLDER)]
    assert loaded, "ComfyUI did not list the pack among its custom nodes:\n" + log[-3000:]
    assert all("IMPORT FAILED" not in line for line in loaded), loaded
    ours = [t for t in tracebacks(log) if PACK_FOLDER in t]
    assert not ours, ours[0]
    assert comfy_host.get("/system_stats")["system"]["comfyui_version"]
