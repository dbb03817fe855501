"""`generate --framepack`: a long video section by section, each section decoded and written as it is sampled."""

from __future__ import annotations

import contextlib
import os

from ..sizes import GIB
from .report import _tick, between_stages, tqdm_bar


def generate_framepack(args, positive, negative, start_image, device, report, tiles) -> dict:
    """--framepack: a long video section by section (long_video.py), each section decoded and written to the
    mp4 as soon as it is sampled."""
    from .. import long_video, pipeline
    from ..loading import load_dit, load_vae
    from ..video_writer import Mp4Writer

    vae = load_vae(args.vae, device)
    dit = load_dit(args.dit, device, weight_dtype=args.weight_dtype, prefetch_blocks=args.prefetch,
                   vram_budget_gb=args.vram_budget, compute=args.compute_dtype, reserve_bytes=int(args.reserve_vram * GIB),
                   host_tier="mapped" if args.group is not None else "auto")  # ranks share the page cache's copy
    dit.model.spread_over(args.group)  # torchrun: every section's forwards shared; rank 0 decodes and writes
    leader = args.group is None or args.group.leader
    try:
        sampler = long_video.section_sampler(dit)
        order = args.order if args.order != "auto" else (
            "forward" if "f1" in os.path.basename(os.path.normpath(args.dit)).lower().replace("-", "_").split("_")
            else "inverted")
        settings = long_video.LongVideoSettings(long_video.frames_for_seconds(args.seconds, sampler.fps), args.window,
                                                args.steps, args.guidance, args.cfg, args.seed, order)
        with report.stage("image encode"):
            start = pipeline.encode_start_image(vae, start_image, args.width, args.height, tiles)
            vae.release_device()
            states = sampler.image_states(args.vision, start_image, args.width, args.height, device)
        total = sampler.sections(settings)
        with report.stage("sample + decode", dit.streamer) as entry, \
                (Mp4Writer(args.out, args.width, args.height, sampler.fps, args.crf) if leader
                 else contextlib.nullcontext()) as writer:
            bar, done = tqdm_bar(total * args.steps, f"{total} sections"), [0]
            frames = long_video.sample_long_video(  # other ranks sample only: rank 0 decodes and writes
                dit, positive, negative, start, states, settings, long_video.decoder(vae, tiles) if leader else None,
                writer.write if leader else None,
                on_step=lambda s: _tick(bar, done[0] * args.steps + s.index + 1, total * args.steps),
                on_section=lambda k, n: done.__setitem__(0, k))
            bar.close()
            entry.update(sections=total, order=order)
            if args.group is not None and (split := dit.model.last_split) is not None:
                entry["ranks"] = split.report()
    finally:
        dit.close()
        vae.close()
        between_stages(device)
    if not leader:
        return {"command": "generate", "rank": args.group.rank, "stages": report.stages}
    print(f"wrote {writer.path}: {frames} frames of {args.width}x{args.height} at {sampler.fps:g} fps "
          f"({total} sections, {order})")
    report.print()
    return {"command": "generate", "out": writer.path, "frames": frames, "width": args.width, "height": args.height,
            "device": str(device), "sections": total, "order": order, "stages": report.stages}
