"""The linter: `ruff check` over the whole repository (pack, tests, bench, scripts) finds nothing. Its
rules are ruff's defaults at the version the test extras pin (pyproject.toml: [tool.ruff])."""

import importlib.util
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ruff_finds_nothing():
    if importlib.util.find_spec("ruff") is None:
        reason = "ruff is not installed: pip install -e '.[test]' (the test extras pin it)"
        if os.environ.get("HYSTREAM_REQUIRE_HOST") or os.environ.get("CI"):
            pytest.fail(reason + " (HYSTREAM_REQUIRE_HOST is set: the lint must run)")
        pytest.skip(reason)
    # --no-cache: a test run leaves no .ruff_cache behind
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", REPO], cwd=REPO, capture_output=True,
                       text=True, timeout=300, check=False)
    assert r.returncode == 0, f"ruff check failed (exit {r.returncode}):\n{r.stdout[-6000:]}{r.stderr[-2000:]}"
