"""`generate`: prompt → mp4 with real model files, the same stages as the nodes, with a per-stage report."""

from __future__ import annotations

import sys

from ..sizes import GIB
from .framepack import generate_framepack
from .generate_checks import check_generate, comfyui_tokenizers, image_prompt_plan, parse_lora
from .report import Report, _tick, between_stages, return_freed_memory_to_the_os, tqdm_bar


def cmd_generate(args) -> dict:
    import torch

    return_freed_memory_to_the_os()

    from .. import pipeline
    from ..loaders.lora import load_lora
    from ..loading import load_dit, load_text_encoder, load_vae, read_dit_config
    from ..sampling.step_cache import StepCacheSettings, report_line
    from ..sampling.step_caches.defaults import default_threshold
    from ..vae.tiling import Hooks, TileSpec
    from ..video_io import read_video, write_mp4

    loras = [parse_lora(s) for s in args.lora or []]
    start_image = check_generate(args, loras)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    report = Report(device)
    tiles = TileSpec(args.tile, args.tile_overlap, args.temporal_tile, args.temporal_overlap)

    family = read_dit_config(args.dit)[0]
    vision, interleave = image_prompt_plan(args)
    te = load_text_encoder(args.llm, args.clip, device, tokenizer_dir=args.tokenizer_dir,
                           host_tokenizer_dirs=comfyui_tokenizers(), reserve_bytes=int(args.reserve_vram * GIB))
    try:
        with report.stage("text encode", te.streamer):
            if vision:  # HunyuanVideo-I2V: the start image's tokens in the prompt (the negative as the reference: text)
                positive = pipeline.encode_image_prompt(te, vision, start_image, args.prompt, interleave)
            else:
                positive = pipeline.encode_prompt(te, args.prompt)
            negative = pipeline.encode_prompt(te, args.negative) if args.negative is not None and args.cfg > 1 else None
    finally:
        te.close()
        del te
        between_stages(device)

    if args.framepack:
        return generate_framepack(args, positive, negative, start_image, device, report, tiles)
    vae = load_vae(args.vae, device)
    if args.input_video:
        frames, _ = read_video(args.input_video, max_frames=args.frames)  # then cropped to 4k+1, sides % 16
        with report.stage("video encode"):
            bar = tqdm_bar(1, "VAE encode")
            latent = pipeline.encode_video(vae, frames, tiles, Hooks(progress=lambda d, t: _tick(bar, d, t)))
            bar.close()
        denoise = args.denoise
    else:
        latent, denoise = pipeline.empty_latent(args.width, args.height, args.frames, family=family), 1.0
    if args.image:  # image-to-video: the start image at the latent's size, attached to both prompts
        fmt = family.latent
        width, height, frames = latent.shape[4] * fmt.space, latent.shape[3] * fmt.space, fmt.video_frames(latent.shape[2])
        with report.stage("image encode"):
            image_latent = pipeline.encode_start_image(vae, start_image, width, height, tiles)
            # a family whose DiT takes the image's vision states (1.5: SigLIP) gets them from --vision
            states = family.start_image_states(args.vision, start_image, width, height, device) if args.vision else None
        positive = pipeline.with_start_image(positive, image_latent, frames, family, states)
        negative = pipeline.with_start_image(negative, image_latent, frames, family, states) if negative else None
    vae.release_device()
    between_stages(device)

    dit = load_dit(args.dit, device, weight_dtype=args.weight_dtype, prefetch_blocks=args.prefetch,
                   vram_budget_gb=args.vram_budget, compute=args.compute_dtype,
                   reserve_bytes=int(args.reserve_vram * GIB),
                   host_tier="mapped" if args.group is not None else "auto")  # ranks share the page cache's copy
    dit.model.spread_over(args.group)  # torchrun: the ranks share each forward's image tokens
    lora_notes = []
    try:
        attached = tuple((load_lora(p, dit.model), s) for p, s in loras)
        for lora, _ in attached:
            lora_notes.append(lora.summary())
            print(lora.summary(), file=sys.stderr)
        settings = pipeline.SampleSettings(args.seed, args.steps, args.flow_shift, args.guidance, denoise, args.cfg)
        cache = None if args.step_cache == "off" else StepCacheSettings(
            args.step_cache, default_threshold(args.step_cache) if args.cache_threshold is None else args.cache_threshold,
            args.cache_start, args.cache_end, args.cache_max_skips)  # no --cache-threshold: the method's default
        with report.stage("sample", dit.streamer) as entry:
            bar = tqdm_bar(args.steps, "sampling")
            drop = pipeline.dropped_frames(dit)  # HunyuanVideo-I2V latent concat: as the reference decode
            latent = pipeline.sample(dit, positive, latent, settings, negative=negative, loras=attached,
                                     on_step=lambda s: _tick(bar, s.index + 1, s.total), step_cache=cache)
            bar.close()
            if plan := dit.streamer.describe_plan():
                entry["plan"] = plan
            if args.group is not None and (split := dit.model.last_split) is not None:
                entry["ranks"] = split.report()
            report_ = dit.step_cache_report
            if report_.get("method") != "off":
                entry["step_cache"] = {"method": report_["method"], "threshold": report_["threshold"],
                                       "skipped": report_["skipped"], "passes": report_["passes"],
                                       "not_streamed_gib": round(report_["bytes_not_streamed"] / GIB, 3)}
                print(report_line(report_).lstrip("; "), file=sys.stderr)
    finally:
        dit.close()
        del dit
        between_stages(device)

    vae.to_device()
    with report.stage("decode") as entry:
        bar = tqdm_bar(1, "VAE decode")
        hooks = Hooks(progress=lambda d, t: _tick(bar, d, t), ranks=args.group)  # torchrun: the ranks share the tiles
        video = pipeline.decode(vae, latent, tiles, hooks)
        bar.close()
        if args.group is not None:
            entry["tiles_here"] = hooks.tiles_here
    vae.close()
    if args.group is not None and not args.group.leader:  # rank 0 blends the tiles and writes
        return {"command": "generate", "rank": args.group.rank, "stages": report.stages}
    video = pipeline.drop_leading_frames(video, drop)
    out = write_mp4(video, args.out, args.fps, args.crf)
    print(f"wrote {out}: {video.shape[0]} frames of {video.shape[2]}x{video.shape[1]}")
    report.print()
    return {"command": "generate", "out": out, "frames": video.shape[0], "width": video.shape[2],
            "height": video.shape[1], "device": str(device), "loras": lora_notes, "stages": report.stages}
