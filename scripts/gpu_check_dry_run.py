"""bench/gpu_check.py as a lent GPU machine runs it, minus the GPU: from a copy of this checkout (tracked and
untracked-but-not-ignored files: what `git archive` would miss in a local run), with an interpreter that can
import torch, numpy, safetensors, einops and transformers (and their own dependencies) but not hystream (the
script must make its checkout importable itself), gguf, diffusers, pytest, imageio_ffmpeg, psutil, nor the
optional packages the test venv brings along (PIL, scipy, sentencepiece, torchvision), from a working
directory outside the repository. Runs the `--device cpu` dry run of every section and the plain run (no
GPU: `{"gpu": false, ...}`), and exits 1 unless both exit 0 with a JSON last line and every section has
figures or a skip reason and no error. CI runs it; so does tests/test_gpu_check.py.

    python scripts/gpu_check_dry_run.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# what a lent machine lacks: the pack's other dependencies, and what only our test venv brings along
ABSENT = ("gguf", "diffusers", "pytest", "imageio_ffmpeg", "psutil", "PIL", "scipy", "sentencepiece", "torchvision")
PRESENT = ("torch", "numpy", "safetensors", "einops", "transformers")
SITECUSTOMIZE = f'''"""The bare GPU machine's interpreter: these packages are not installed, nor is hystream."""
import importlib.machinery
import sys

for name in {ABSENT!r}:
    sys.modules[name] = None  # absent, for `import` and importlib.util.find_spec alike


class OnlyAFoldersHystream:
    """hystream only from a folder on sys.path (the link gpu_check.py makes), never an installed one."""

    def find_spec(self, name, path=None, target=None):
        if name != "hystream":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name)
        if spec is None or "site-packages" in (spec.origin or ""):
            raise ModuleNotFoundError("No module named 'hystream'", name="hystream")
        return spec


sys.meta_path.insert(0, OnlyAFoldersHystream())
'''
PROBE = f"""import importlib, json
found = {{}}
for name in {ABSENT + PRESENT + ("hystream",)!r}:
    try:
        importlib.import_module(name)
        found[name] = True
    except ImportError:
        found[name] = False
print(json.dumps(found))
"""


def copy_checkout(dest: str) -> str:
    """The files a checkout has (tracked, and untracked ones git does not ignore), copied to `dest`."""
    try:
        listed = subprocess.run(["git", "-C", REPO, "ls-files", "-co", "--exclude-standard", "-z"],
                                capture_output=True, text=True, check=False)
    except OSError:  # no git on this machine
        listed = None
    if listed is None or listed.returncode != 0:  # not a git checkout (an unpacked archive): everything but what git would ignore
        shutil.copytree(REPO, dest, symlinks=True, ignore=shutil.ignore_patterns(
            ".git", ".venv", "__pycache__", "*.egg-info", ".pytest_cache", "out", "hystream_demo"))
        return dest
    for rel in filter(None, listed.stdout.split("\0")):
        src = os.path.join(REPO, rel)
        if os.path.lexists(src):  # a tracked file deleted in the work tree is not part of it
            os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
            shutil.copy2(src, os.path.join(dest, rel), follow_symlinks=False)
    return dest


def bare_env(blocker_dir: str) -> dict:
    with open(os.path.join(blocker_dir, "sitecustomize.py"), "w") as f:
        f.write(SITECUSTOMIZE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "HYSTREAM_", "PYTEST"))}
    return dict(env, PYTHONPATH=blocker_dir, CUDA_VISIBLE_DEVICES="")  # the plain run must find no GPU


def run(cmd: list[str], cwd: str, env: dict, timeout: float) -> tuple[int, dict | None, str]:
    """(exit status, the last stdout line as JSON or None, the output's tail)."""
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    lines = r.stdout.strip().splitlines()
    try:
        last = json.loads(lines[-1]) if lines else None
    except ValueError:
        last = None
    return r.returncode, last, (r.stdout[-1500:] + "\n" + r.stderr[-3000:])


def section_problems(report: dict) -> list[str]:
    """Sections with an error, or with neither figures nor a skip reason."""
    problems = []
    for name, figures in report.get("sections", {}).items():
        if "error" in figures:
            problems.append(f"{name}: {figures['error']}\n{figures.get('trace', '')}")
        elif not (set(figures) - {"seconds"}):
            problems.append(f"{name}: no figures and no skip reason")
    return problems


def check(work: str, timeout: float = 300) -> dict:
    """Everything this script checks, in `work` (a scratch folder): {"problems": [...], "report": the dry
    run's JSON, "plain": the plain run's}."""
    copy = copy_checkout(os.path.join(work, "checkout"))
    env = bare_env(tempfile.mkdtemp(dir=work, prefix="site-"))
    cwd = tempfile.mkdtemp(dir=work, prefix="cwd-")
    found = run([sys.executable, "-c", PROBE], cwd, env, 120)[1] or {}
    wrong = [n for n in ABSENT + ("hystream",) if found.get(n, True)] + [n for n in PRESENT if not found.get(n)]
    if wrong:
        return {"problems": [f"the bare interpreter is not bare: {found}"], "report": None, "plain": None}
    script = os.path.join(copy, "bench", "gpu_check.py")
    problems = []
    code, report, tail = run([sys.executable, script, "--device", "cpu", "--out", os.path.join(work, "out")],
                             cwd, env, timeout)
    if code != 0 or report is None:
        problems.append(f"the dry run exited {code}, last line {'not ' if report is None else ''}JSON:\n{tail}")
    problems += section_problems(report or {})
    code, plain, tail = run([sys.executable, script], cwd, env, 120)
    if code != 0 or plain is None or plain.get("gpu") is not False:
        problems.append(f"without a GPU the plain run exited {code} with {plain}:\n{tail}")
    return {"problems": problems, "report": report, "plain": plain}


def main() -> int:
    work = tempfile.mkdtemp(prefix="hystream-gpu-check-dry-run-")
    try:
        problems = check(work)["problems"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for p in problems:
        print(p, file=sys.stderr)
    print("gpu_check dry run: " + ("ok" if not problems else f"{len(problems)} problem(s)"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
