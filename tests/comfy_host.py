"""The real ComfyUI host for tests: a copy of the pinned snapshot with this pack linked into
custom_nodes/, started with --cpu on a free loopback port and driven over HTTP."""

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

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACK_FOLDER = "ComfyUI-HyStream"  # deliberately not "hystream": imports must not depend on the folder name


def find_comfyui() -> str | None:
    for candidate in (os.environ.get("COMFYUI_PATH"), os.path.join(REPO, "..", "shared", "comfyui")):
        if candidate and os.path.isfile(os.path.join(candidate, "main.py")):
            return os.path.abspath(candidate)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyHost:
    def __init__(self, snapshot: str, workdir: str, model_dirs: dict[str, str] | None = None):
        self.snapshot = snapshot
        self.root = os.path.join(workdir, "ComfyUI")
        self.model_dirs = model_dirs or {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(workdir, "comfyui.log")
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 240.0) -> "ComfyHost":
        shutil.copytree(self.snapshot, self.root, symlinks=True,
                        ignore=shutil.ignore_patterns("tests", "tests-unit", ".git", "__pycache__"))
        os.symlink(REPO, os.path.join(self.root, "custom_nodes", PACK_FOLDER))
        args = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
                "--disable-auto-launch", "--disable-api-nodes"]
        if self.model_dirs:
            config = os.path.join(os.path.dirname(self.root), "extra_model_paths.yaml")
            with open(config, "w") as f:
                f.write("hystream_tests:\n" + "".join(f"  {k}: {v}\n" for k, v in self.model_dirs.items()))
            args += ["--extra-model-paths-config", config]
        self._log = open(self.log_path, "w")
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


def upload(host: "ComfyHost", path: str, name: str) -> dict:
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


def run_prompt(host: "ComfyHost", workflow: dict, timeout: float = 300, on_message=None) -> dict:
    """Queue an API-format workflow as an automation client does: open the websocket, POST /prompt,
    follow the messages to the end, fetch /history. Returns {"status", "messages", "history", "error"}."""
    import uuid

    import websocket

    client = uuid.uuid4().hex
    ws = websocket.create_connection(f"ws://127.0.0.1:{host.port}/ws?clientId={client}", timeout=timeout)
    try:
        code, answer = host.post("/prompt", {"prompt": workflow, "client_id": client})
        if code != 200:
            return {"status": "rejected", "code": code, "answer": answer, "messages": []}
        prompt_id = answer["prompt_id"]
        messages, status, error = [], None, None
        deadline = time.time() + timeout
        while status is None and time.time() < deadline:
            raw = ws.recv()
            if isinstance(raw, bytes):  # previews
                messages.append({"type": "preview", "data": {}})
                continue
            msg = json.loads(raw)
            data = msg.get("data", {})
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            messages.append(msg)
            if on_message:
                on_message(msg)
            kind = msg["type"]
            if kind == "execution_success" or (kind == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id):
                status = "success"
            elif kind == "execution_error":
                status, error = "error", data
            elif kind == "execution_interrupted":
                status = "interrupted"
        if status is None:
            raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s")
        history = {}
        while time.time() < deadline:  # the history entry lands just after the last websocket message
            history = host.get(f"/history/{prompt_id}").get(prompt_id, {})
            if history.get("status", {}).get("completed") is not None or history.get("outputs"):
                break
            time.sleep(0.1)
        return {"status": status, "messages": messages, "history": history, "error": error, "prompt_id": prompt_id}
    finally:
        ws.close()


def fetch_output(host: "ComfyHost", item: dict, dest: str) -> str:
    query = urllib.parse.urlencode({"filename": item["filename"], "subfolder": item.get("subfolder", ""),
                                    "type": item.get("type", "output")})
    with urllib.request.urlopen(f"{host.url}/view?{query}", timeout=60) as r, open(dest, "wb") as f:
        f.write(r.read())
    return dest
