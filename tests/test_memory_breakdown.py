"""`bench/memory_estimate.py --breakdown`: what is alive at the DiT's peak, by module, op and shape — the
weights left out, everything else in, so the rows add up to the activation peak the table reports."""

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
MEMEST = os.environ.get("MEMEST_PATH", os.path.join(HERE, "..", "..", "shared", "tools", "memest"))


@pytest.fixture(scope="module")
def estimator():
    if not os.path.exists(os.path.join(MEMEST, "estimate.py")):
        pytest.skip(f"no memest at {MEMEST} (shared/tools/memest; set MEMEST_PATH)")
    sys.path[:0] = [MEMEST, os.path.join(HERE, "..", "bench")]
    import memory_estimate

    return memory_estimate


def test_breakdown_adds_up_to_the_activation_peak(estimator):
    stage = estimator.dit_stage(5, 64, 96, 16, quick=False, breakdown=True)
    rows = stage["breakdown"]
    total = sum(r["bytes"] for r in rows)
    activations = stage["activations_gib"] * estimator.GIB
    inputs = 2 ** 20  # x, timestep, text, pooled, guidance: well under a MiB here
    assert activations <= total <= activations + inputs, (total, activations)
    assert rows == sorted(rows[:-1], key=lambda r: -r["bytes"]) + rows[-1:] or len(rows) < 13
    hidden = 3072  # no weight is listed: the full-size DiT's matrices are [3072, n] or [n, 3072]
    assert not any(r["op"] == "input" and len(r["shape"]) == 2 and hidden in r["shape"] for r in rows), rows
    assert stage["peak_at"]["module"] and any(r["module"] not in ("<root>", "(the rest)") for r in rows)
