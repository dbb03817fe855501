#!/usr/bin/env bash
# The full test suite from a bare machine: virtualenv, dependencies, then pytest.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
bash "$repo/scripts/setup_venv.sh" test
venv="${HYSTREAM_VENV:-$repo/.venv}"
cd "$repo"
# pytest's own exit status: a collection error, or no tests collected (5), fails like a failing test.
exec "$venv/bin/python" -m pytest -q "$@"
