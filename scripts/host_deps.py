"""Install what the ComfyUI host imports but its requirements.txt does not list, then prove it starts.

ComfyUI's requirements miss modules its own code imports (0.3.64: `requests`, imported by
app/frontend_management.py; a test venv gets it from diffusers by luck, a bare one does not). Rather than
guess a list, this starts the host the way the demo will (`main.py --cpu --quick-test-for-ci`, with a
throw-away base directory and HyStream linked into its custom_nodes), and while it fails with
`ModuleNotFoundError: No module named X` installs X (under its PyPI name) and tries again. It ends with
the host starting and HyStream importing, or exits non-zero saying what is missing.

    python scripts/host_deps.py COMFYUI_DIR [--constraints FILE]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

PYPI_NAMES = {"yaml": "pyyaml", "PIL": "pillow", "cv2": "opencv-python-headless", "skimage": "scikit-image",
              "sklearn": "scikit-learn", "google": "protobuf", "attr": "attrs", "dateutil": "python-dateutil"}
NEVER = {"torch", "torchvision", "torchaudio"}  # the host's torch is pinned by the caller; no build of torchaudio here
MISSING = re.compile(r"ModuleNotFoundError: No module named '([^'.]+)")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start_once(comfy: str) -> tuple[int, str]:
    base = tempfile.mkdtemp(prefix="hystream-host-deps-")
    try:
        os.makedirs(os.path.join(base, "custom_nodes"))
        os.symlink(REPO, os.path.join(base, "custom_nodes", "ComfyUI-HyStream"))
        run = subprocess.run([sys.executable, "main.py", "--cpu", "--quick-test-for-ci", "--base-directory", base],
                             cwd=comfy, capture_output=True, text=True, timeout=600, check=False)
        return run.returncode, run.stdout + run.stderr
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("comfyui", help="the ComfyUI checkout")
    ap.add_argument("--constraints", help="pip constraints file (pins torch)")
    ap.add_argument("--attempts", type=int, default=8, help="modules to install at most")
    args = ap.parse_args()
    installed = []
    for _ in range(args.attempts + 1):
        code, log = start_once(args.comfyui)
        missing = MISSING.findall(log)
        ours = [line for line in log.splitlines() if "IMPORT FAILED" in line and "HyStream" in line]
        if code == 0 and not ours:
            print(f"ComfyUI starts with HyStream{' after installing ' + ', '.join(installed) if installed else ''}")
            return 0
        fatal = missing[-1] if (code != 0 and missing) else None
        if fatal is None or fatal in NEVER or fatal in installed:
            print(log[-4000:], file=sys.stderr)
            print("the ComfyUI host does not start with HyStream"
                  + (f" (HyStream failed to import: {ours[-1].strip()})" if ours else f" (exit status {code})"),
                  file=sys.stderr)
            return 1
        package = PYPI_NAMES.get(fatal, fatal)
        print(f"the host imports '{fatal}', which its requirements do not list: installing {package}")
        pip = [sys.executable, "-m", "pip", "install", "-q", package] + (["-c", args.constraints] if args.constraints else [])
        subprocess.run(pip, check=True)
        installed.append(fatal)
    print(f"still missing modules after installing {', '.join(installed)}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
