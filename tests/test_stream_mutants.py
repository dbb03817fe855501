"""The protocol tests can fail: each ordering call in offload/ (wait_event, wait_stream, synchronize(),
.wait(), record(), record_stream, and clearing a latched CUDA error), removed one at a time from a copy of
the pack, must make `pytest -m stream_protocol` fail with an ordering violation of the simulated CUDA —
not any failure: a mutant that only breaks something else would pass for caught while the checker saw
nothing. A call whose removal goes unnoticed is either unneeded or untested."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORDERING = re.compile(r"\.(wait_event|wait_stream|synchronize|wait|record|record_stream|clear_error)\(")
PROTOCOL_TESTS = ["tests/test_stream_protocol.py", "tests/test_cuda_defects.py"]


def ordering_calls():
    found = []
    for name in sorted(os.listdir(os.path.join(REPO, "offload"))):
        if not name.endswith(".py"):
            continue
        lines = Path(REPO, "offload", name).read_text().splitlines()
        for n, line in enumerate(lines):
            code = line.split("#")[0]
            if ORDERING.search(code) and not code.strip().startswith(("def ", "return ")):
                found.append((name, n, line.strip()))
    return found


CALLS = ordering_calls()


def test_the_streamer_has_ordering_calls_to_mutate():
    assert len(CALLS) >= 12, CALLS
    assert {f for f, _, _ in CALLS} >= {"ring.py", "backend.py", "staging.py", "host_buffer.py"}, CALLS


@pytest.fixture(scope="module")
def copy_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("mutants")
    shutil.copytree(REPO, root / "hystream", ignore=shutil.ignore_patterns(
        ".venv", ".git", "__pycache__", "hystream_demo", "example_workflows", "bench", "*.jpg"))
    where = subprocess.run([sys.executable, "-c", "import hystream; print(hystream.__file__)"], cwd=root / "hystream",
                           env=dict(os.environ, PYTHONPATH=str(root)), capture_output=True, text=True,
                           check=False).stdout
    assert where.startswith(str(root)), where  # the copy is what the mutant runs import
    return root


@pytest.mark.parametrize("file, line, code", CALLS, ids=[f"{f}:{n + 1}" for f, n, _ in CALLS])
def test_removing_an_ordering_call_is_caught(copy_root, file, line, code):
    path = copy_root / "hystream" / "offload" / file
    original = path.read_text()
    lines = original.splitlines()
    indent = lines[line][: len(lines[line]) - len(lines[line].lstrip())]
    lines[line] = indent + "pass  # mutant: " + code
    path.write_text("\n".join(lines) + "\n")
    try:
        env = dict(os.environ, PYTHONPATH=str(copy_root))
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m", "stream_protocol",
                            *PROTOCOL_TESTS], cwd=copy_root / "hystream", env=env,
                           capture_output=True, text=True, timeout=900, check=False)
    finally:
        path.write_text(original)
    assert r.returncode != 0, f"removing `{code}` ({file}:{line + 1}) went unnoticed:\n{r.stdout[-1500:]}"
    # caught by the checker (stream_check.Violation), not by some other failure
    assert "stream_check.Violation" in r.stdout, f"removing `{code}` failed, but not by an ordering violation:\n{r.stdout[-2500:]}"
