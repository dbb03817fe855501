#!/usr/bin/env bash
# Create a virtualenv (default .venv in the repository, or $HYSTREAM_VENV) with torch and HyStream.
# Usage: bash scripts/setup_venv.sh [host|test]
#   host: also the requirements of the ComfyUI found at $COMFYUI_PATH or ../shared/comfyui (for the demo)
#   test: host + diffusers, pytest, playwright and Debian's chromium (for the test suite)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
venv="${HYSTREAM_VENV:-$repo/.venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
py="$venv/bin/python"
"$py" -m pip install -q --upgrade pip
# Inside ComfyUI the host's torch is used and never touched. Standalone, we install the torch the
# ComfyUI snapshot is tested with, and pin it so no dependency can pull another build.
constraints="$venv/hystream-constraints.txt"
printf 'torch==2.14.1\ntorchvision==0.29.1\n' > "$constraints"
"$py" -m pip install -q -c "$constraints" torch torchvision
mode="${1:-}"
if [ "$mode" = "test" ]; then
  "$py" -m pip install -q -c "$constraints" -e "$repo[test]"
  # The workflow check drives the real frontend in Debian's Chromium (never a downloaded browser).
  if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1)) \
      || echo "could not install chromium: the UI workflow test will report it"
  fi
else
  "$py" -m pip install -q -c "$constraints" -e "$repo"
fi
comfy="${COMFYUI_PATH:-$repo/../shared/comfyui}"
if [ -n "$mode" ] && [ -f "$comfy/requirements.txt" ]; then
  # torchaudio has no build for this torch; ComfyUI then only loses its audio nodes.
  grep -vE '^(torch|torchvision|torchaudio)[[:space:]]*$' "$comfy/requirements.txt" > "$venv/comfyui-requirements.txt"
  "$py" -m pip install -q -c "$constraints" -r "$venv/comfyui-requirements.txt"
  # ...and what the host imports without listing it (found by starting it with HyStream installed)
  "$py" "$repo/scripts/host_deps.py" "$comfy" --constraints "$constraints"
fi
"$py" -c "import torch, hystream; print('HyStream venv ready:', '$venv', 'torch', torch.__version__)"
