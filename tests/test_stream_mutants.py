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
import xml.etree.ElementTree as ET
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


VIOLATION = re.compile(r'(failed on \w+ with ")?stream_check\.Violation\b')
PARITY_FAILURES = ("assert ", "AssertionError", "Failed: ")  # a failed assert or pytest.fail


def verdict(returncode: int, junit: Path) -> str:
    """What a protocol-test run on a mutant says: "caught" when its first failure is the checker's own
    report (stream_check.Violation) or a failed parity check (the failing line compares with torch.equal);
    "unnoticed" when it passed; else "invalid mutant: …" (the mutant crashed: an ImportError, SyntaxError or
    TypeError, a setup error) — that says nothing about the protocol and must not count as caught."""
    if returncode == 0:
        return "unnoticed"
    if not junit.exists():
        return f"invalid mutant: pytest exited {returncode} without a report"
    for case in ET.parse(junit).iter("testcase"):
        for result in case:
            if result.tag not in ("failure", "error"):
                continue
            message, text = result.get("message") or "", result.text or ""
            failing = [ln for ln in text.splitlines() if ln.startswith(">")][-1:]  # the statement that failed
            if VIOLATION.match(message):  # in a test, or in its setup/teardown
                return "caught"
            if result.tag == "failure" and message.startswith(PARITY_FAILURES) and "torch.equal(" in "".join(failing):
                return "caught"
            return f"invalid mutant: {result.tag} in {case.get('name')}: {message[:300]}"
    return f"invalid mutant: pytest exited {returncode} with no failing test"


def run_mutant(copy_root, file: str, line: int, replacement: str, junit: Path) -> str:
    """The protocol tests on the copy with `file`'s line `line` replaced (indentation kept); the verdict."""
    path = copy_root / "hystream" / "offload" / file
    original = path.read_text()
    lines = original.splitlines()
    indent = lines[line][: len(lines[line]) - len(lines[line].lstrip())]
    lines[line] = indent + replacement
    path.write_text("\n".join(lines) + "\n")
    try:
        env = dict(os.environ, PYTHONPATH=str(copy_root))
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m", "stream_protocol",
                            f"--junitxml={junit}", *PROTOCOL_TESTS], cwd=copy_root / "hystream", env=env,
                           capture_output=True, text=True, timeout=900, check=False)
    finally:
        path.write_text(original)
    return verdict(r.returncode, junit) + "\n" + r.stdout[-1500:]


@pytest.mark.parametrize("file, line, code", CALLS, ids=[f"{f}:{n + 1}" for f, n, _ in CALLS])
def test_removing_an_ordering_call_is_caught(copy_root, tmp_path, file, line, code):
    got = run_mutant(copy_root, file, line, "pass  # mutant: " + code, tmp_path / "junit.xml")
    assert got.startswith("caught"), f"removing `{code}` ({file}:{line + 1}): {got}"


def test_a_mutant_that_only_crashes_is_not_counted_as_caught(copy_root, tmp_path):
    """The verdict itself: a mutant that raises instead of leaving a call out fails the tests too, with an
    "Error" in the output, but the checker saw no ordering violation."""
    file, line, code = CALLS[0]
    got = run_mutant(copy_root, file, line, 'raise RuntimeError("Error")  # mutant: ' + code, tmp_path / "junit.xml")
    assert got.startswith("invalid mutant") and "RuntimeError" in got, got
