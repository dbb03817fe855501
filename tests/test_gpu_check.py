"""bench/gpu_check.py can never come back empty for its own reasons: from a copy of the checkout, with an
interpreter that has only what a lent GPU machine has (scripts/gpu_check_dry_run.py), its `--device cpu`
dry run runs every section to figures or a stated skip, and without a GPU the plain run says so."""

import importlib.util
import json
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def dry_run_module():
    path = os.path.join(REPO, "scripts", "gpu_check_dry_run.py")
    spec = importlib.util.spec_from_file_location("gpu_check_dry_run", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_runs_every_section_on_a_bare_interpreter(tmp_path):
    result = dry_run_module().check(str(tmp_path))
    assert not result["problems"], "\n\n".join(result["problems"])
    report = result["report"]
    with open(tmp_path / "out" / "gpu_check.json") as f:
        assert json.load(f) == report  # the file written after each section holds the final figures too
    sections = report["sections"]
    assert list(sections) == ["environment", "pinning_refusal", "protocol", "dit_file", "dit_streamed_vs_resident",
                              "dit_streamed_vs_resident_async_allocator", "peaks", "pinned", "gguf_decode",
                              "ring_merge", "worker_thread_sanitizer"]
    assert all("skipped" not in figures for figures in sections.values()), sections  # the dry run runs them all
    protocol = sections["protocol"]
    assert protocol["passed"] == protocol["cases"] and protocol["failed"] == 0, protocol
    assert sections["protocol"]["streamed_equals_resident"]["failed"] == 0
    assert sections["dit_streamed_vs_resident"]["tiny"]["identical"] is True
    assert sections["dit_streamed_vs_resident_async_allocator"]["returncode"] == 0
    assert sections["pinning_refusal"]["alloc_pinned_returned_none"] is True
    assert sections["ring_merge"]["ok"] is True, sections["ring_merge"]
    assert sections["worker_thread_sanitizer"]["worker_wired"] is True  # worker() is entered on the worker thread
    assert result["plain"]["gpu"] is False and not result["plain"].get("sections"), result["plain"]
