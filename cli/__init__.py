"""Headless HyStream, `python -m hystream <command>`: parse the command line, run the command, write its report."""

from __future__ import annotations

import json
import os
import sys

from ..errors import HyStreamError
from .parser import build_parser
from .ranks import joined_ranks
from .report import return_freed_memory_to_the_os

__all__ = ["build_parser", "main", "return_freed_memory_to_the_os"]


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with joined_ranks(args) as args.group:
            report = args.func(args)
    except HyStreamError as e:  # user errors: the message says what to do, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        if str(e).startswith("ComfyUI"):
            print(f"error: {e}", file=sys.stderr)
            return 3
        raise
    if report.get("rank"):  # another rank of a torchrun launch: rank 0 writes the video and the report
        return 0
    if "command" in report and report["command"] in ("generate", "demo"):
        with open(os.path.splitext(report.get("out", "report"))[0] + ".report.json", "w") as f:
            json.dump(report, f, indent=2)
    print(json.dumps(report))
    return 0
