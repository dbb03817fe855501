"""The README's commands as CI runs them: the test command fails when pytest collects nothing (a broken
collection must never pass CI), and CI runs the main job on a virtualenv of its own."""

import os
import subprocess
import sys
from pathlib import Path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_test_command_fails_when_nothing_is_collected():
    env = dict(os.environ, HYSTREAM_VENV=sys.prefix)  # this venv: set-up finds everything installed
    r = subprocess.run(["bash", "scripts/test.sh", "-k", "no_test_is_called_this", "tests/test_package.py"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=1200, check=False)
    assert r.returncode == 5, r.stdout[-2000:] + r.stderr[-2000:]


def test_ci_runs_the_main_job_on_its_own_virtualenv():
    ci = Path(REPO, ".ci", "run").read_text()
    readme = Path(REPO, "README.md").read_text()
    assert "bash scripts/demo.sh" in readme and "bash scripts/test.sh" in readme
    demo_line = next(line for line in ci.splitlines() if "scripts/demo.sh" in line)
    assert "HYSTREAM_VENV=" in demo_line and ".venv" not in demo_line
    assert ci.index("scripts/demo.sh") < ci.index("bash scripts/test.sh")
