#!/usr/bin/env bash
# The main job from a bare machine: virtualenv, dependencies, then the headless run.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
bash "$repo/scripts/setup_venv.sh"
venv="${HYSTREAM_VENV:-$repo/.venv}"
cd "$repo"
exec "$venv/bin/python" -m hystream smoke "$@"
