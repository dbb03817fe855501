"""`plan` (each stage's device memory at a size) and `smoke` (a tiny DiT, streamed vs resident)."""

from __future__ import annotations

import json
import tempfile
import time

from ..errors import InputError


def cmd_plan(args) -> dict:
    from .. import planner
    from ..families import registry

    capability = tuple(int(v) for v in f"{args.compute_capability:.1f}".split(".")) if args.compute_capability else \
        planner.FLASH_CAPABLE
    try:
        family = registry.lookup(args.family)
    except KeyError as e:
        raise InputError("--family naming a model family", repr(args.family), e.args[0]) from None
    plans = planner.plan_all(args.width, args.height, args.frames, args.vram, weight_dtype=args.weight_dtype,
                             prefetch=args.prefetch, capability=capability, family=family)
    print(f"{family.title}: " + planner.describe(plans, args.width, args.height, args.frames, args.vram))
    fits = None if args.vram is None else all(p.fits for p in plans)
    return {"command": "plan", "family": family.name, "width": args.width, "height": args.height, "frames": args.frames, "vram_gib": args.vram,
            "fits": fits, "stages": planner.as_dict(plans)}


def cmd_smoke(args) -> dict:
    import torch

    from ..families import registry
    from ..loading import load_dit

    folder = args.out or tempfile.mkdtemp(prefix="hystream-smoke-")
    path, inputs = registry.default().smoke_model(folder, args.width, args.height, args.seed)
    results = {}
    for mode, resident in (("streamed", None), ("resident", "all")):
        dit = load_dit(path, args.device, prefetch_blocks=args.prefetch, resident_blocks=resident)
        try:
            t0 = time.perf_counter()
            with torch.no_grad():
                out = dit(**inputs)
            results[mode] = (out, time.perf_counter() - t0, dit.stats)
            print(f"{mode:9s} {dit.layout}: {results[mode][1]:.3f} s; {dit.stats.summary()}")
        finally:
            dit.close()
    same = bool(torch.equal(results["streamed"][0], results["resident"][0]))
    print(f"streamed output {'is bit-identical to' if same else 'DIFFERS from'} the resident one")
    report = dict(command="smoke", file=path, identical=same, shape=list(results["streamed"][0].shape),
                  **{f"streamed_{k}": v for k, v in results["streamed"][2].as_dict().items()})
    if not same:
        raise SystemExit(json.dumps(report))
    return report
