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
