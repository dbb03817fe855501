#!/usr/bin/env bash
# The full test suite from a bare machine: virtualenv, dependencies, then pytest.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
bash "$repo/scripts/setup_venv.sh" test
venv="${HYSTREAM_VENV:-$repo/.venv}"
cd "$repo"
set +e
"$venv/bin/python" -m pytest -q "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests"; rc=0; fi
exit "$rc"
