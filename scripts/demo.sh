#!/usr/bin/env bash
# The main job from a bare machine: virtualenv, dependencies (and those of the ComfyUI found at
# $COMFYUI_PATH or ../shared/comfyui), then the demo: tiny random models through the real ComfyUI.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
bash "$repo/scripts/setup_venv.sh" host
venv="${HYSTREAM_VENV:-$repo/.venv}"
cd "$repo"
exec "$venv/bin/python" -m hystream demo "$@"
