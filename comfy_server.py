"""A real ComfyUI run by HyStream for the demo and the host tests: a copy of a ComfyUI checkout with this
pack linked into custom_nodes/ (under a folder name other than the package's), started with --cpu on a
free loopback port with an extra model folder, and driven over its HTTP API as an automation user would.
It starts ComfyUI as a separate process: nothing here imports the host."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

REPO = os.path.dirname(os.path.abspath(__file__))  # the pack is the repository root
PACK_FOLDER = "ComfyUI-HyStream"  # deliberately not "hystream": imports must not depend on the folder name


def find_comfyui() -> str | None:
    """COMFYUI_PATH, else the pinned snapshot beside the repository (../shared/comfyui)."""
    for candidate in (os.environ.get("COMFYUI_PATH"), os.path.join(REPO, "..", "shared", "comfyui")):
        if candidate and os.path.isfile(os.path.join(candidate, "main.py")):
            return os.path.abspath(candidate)
    return None


def host_of_this_pack() -> str | None:
    """The ComfyUI a user runs this pack in: $COMFYUI_PATH, else the checkout whose custom_nodes/ holds
    the pack (for the CLI to find ComfyUI's bundled tokenizers)."""
    env = os.environ.get("COMFYUI_PATH")
    if env and os.path.isfile(os.path.join(env, "main.py")):
        return os.path.abspath(env)
    parent = os.path.dirname(os.path.realpath(REPO)), os.path.dirname(os.path.abspath(REPO))
    for custom_nodes in parent:
        root = os.path.dirname(custom_nodes)
        if os.path.basename(custom_nodes) == "custom_nodes" and os.path.isfile(os.path.join(root, "main.py")):
            return root
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_flags(comfyui: str) -> list[str]:
    """Flags for a quiet offline test server, chosen by what this ComfyUI accepts: --disable-api-nodes only
    where it is a real flag (it is a deprecated alias, to be removed, in the 0.38 line)."""
    flags = ["--disable-auto-launch"]
    try:
        with open(os.path.join(comfyui, "comfy", "cli_args.py"), encoding="utf-8") as f:
            lines = [line for line in f if '"--disable-api-nodes"' in line]
    except OSError:
        lines = []
    if lines and not any("deprecat" in line.lower() or "SUPPRESS" in line for line in lines):
        flags.append("--disable-api-nodes")
    return flags


class ComfyHost:
    def __init__(self, snapshot: str, workdir: str, model_dirs: dict[str, str] | None = None, *,
                 base_directory: str | None = None, extra_nodes: dict[str, str] | None = None):
        """base_directory: user data apart from the code, as ComfyUI Desktop runs it (--base-directory);
        extra_nodes: {folder: __init__.py source} of small node packs to install beside HyStream."""
        self.snapshot = snapshot
        self.root = os.path.join(workdir, "ComfyUI")
        self.model_dirs = model_dirs or {}
        self.base_directory = base_directory
        self.extra_nodes = extra_nodes or {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(workdir, "comfyui.log")
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 240.0) -> ComfyHost:
        shutil.copytree(self.snapshot, self.root, symlinks=True,
                        ignore=shutil.ignore_patterns("tests", "tests-unit", ".git", "__pycache__"))
        nodes_dir = os.path.join(self.base_directory or self.root, "custom_nodes")
        os.makedirs(nodes_dir, exist_ok=True)
        os.symlink(REPO, os.path.join(nodes_dir, PACK_FOLDER))
        for name, source in self.extra_nodes.items():
            os.makedirs(os.path.join(nodes_dir, name))
            with open(os.path.join(nodes_dir, name, "__init__.py"), "w") as f:
                f.write(source)
        args = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
                *server_flags(self.root)]
        if self.base_directory:
            args += ["--base-directory", self.base_directory]
        if self.model_dirs:
            config = os.path.join(os.path.dirname(self.root), "extra_model_paths.yaml")
            with open(config, "w") as f:
                f.write("hystream_tests:\n" + "".join(f"  {k}: {v}\n" for k, v in self.model_dirs.items()))
            args += ["--extra-model-paths-config", config]
        self._log = open(self.log_path, "w")  # noqa: SIM115 - the server's output for its lifetime; stop() closes it
        self.proc = subprocess.Popen(args, cwd=self.root, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                self.get("/system_stats")
                self.startup_log = self.log()
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer within {timeout:.0f} s:\n{self.log()[-4000:]}")

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def post(self, path: str, payload) -> tuple[int, dict]:
        req = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                body = r.read()
                return r.status, (json.loads(body) if body else {})
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()


def upload(host: ComfyHost, path: str, name: str) -> dict:
    """POST /upload/image (ComfyUI's upload for images and videos alike) → the stored name."""
    boundary = "----hystream" + os.urandom(8).hex()
    with open(path, "rb") as f:
        data = f.read()
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
            f"Content-Type: video/mp4\r\n\r\n").encode() + data + \
        f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"overwrite\"\r\n\r\ntrue\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(host.url + "/upload/image", data=body,
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def fetch_output(host: ComfyHost, item: dict, dest: str) -> str:
    query = urllib.parse.urlencode({"filename": item["filename"], "subfolder": item.get("subfolder", ""),
                                    "type": item.get("type", "output")})
    with urllib.request.urlopen(f"{host.url}/view?{query}", timeout=60) as r, open(dest, "wb") as f:
        f.write(r.read())
    return dest


def queue_and_wait(host: ComfyHost, workflow: dict, timeout: float = 1800, report=None) -> dict:
    """POST /prompt and poll /history until the prompt finishes. Returns its history entry; raises
    RuntimeError with ComfyUI's node error or execution error."""
    code, answer = host.post("/prompt", {"prompt": workflow})
    if code != 200:
        raise RuntimeError(f"ComfyUI refused the workflow: {json.dumps(answer.get('node_errors') or answer)[:2000]}")
    prompt_id, start = answer["prompt_id"], time.time()
    while time.time() - start < timeout:
        entry = host.get(f"/history/{prompt_id}").get(prompt_id)
        if entry and entry.get("status", {}).get("completed") is not None:
            if entry["status"].get("status_str") != "success":
                errors = [m for m in entry["status"].get("messages", []) if m[0] == "execution_error"]
                raise RuntimeError(f"ComfyUI failed: {errors[0][1].get('exception_message') if errors else entry['status']}")
            return entry
        if report:
            report(time.time() - start)
        time.sleep(0.5)
    raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout:.0f} s")
