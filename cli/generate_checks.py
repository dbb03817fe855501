"""`generate`'s inputs before any model is opened: the checks, the variant's presets, the image prompt plan."""

from __future__ import annotations

import os
import sys

from ..errors import InputError


def parse_lora(spec: str) -> tuple[str, float]:
    path, _, strength = spec.rpartition(":") if ":" in spec else (spec, "", "1")
    try:
        return path, float(strength)
    except ValueError:
        raise InputError("--lora FILE:STRENGTH", repr(spec), "e.g. --lora my_lora.safetensors:0.8") from None


def check_generate(args, loras):
    """Everything the run will need, checked before any model is opened: a bad --out, --fps, tile size or
    missing file fails in a second, not after the whole generation. Returns the start image (or None)."""
    from .. import pipeline
    from ..loading import read_dit_config
    from ..vae.tiling import TileSpec, check_tiles
    from ..video_io import check_output_settings, probe_video

    check_output_settings(args.out, args.fps, args.crf)
    for path in [args.dit, args.llm, args.clip, args.vae, args.input_video, args.image, args.vision, *(p for p, _ in loras)]:
        if path and not os.path.exists(path):
            raise InputError("existing files", f"no file at {path!r}", "check the paths")
    apply_preset(args)
    if args.framepack:
        family, cfg = read_dit_config(args.dit)
        if not family.samples_sections(cfg):
            raise family.not_sectioned(f"DiT at {args.dit}")
        if not args.image or not args.vision:
            raise InputError("--image (the start image) and --vision (SigLIP: sigclip_vision_patch14_384.safetensors) "
                             "with --framepack", f"--image {args.image!r}, --vision {args.vision!r}", "add both")
    if not args.input_video:  # the DiT's family (from its header) says which sizes its VAE and patches take
        pipeline.check_video_size(args.width, args.height, args.frames, read_dit_config(args.dit)[0])
    if args.tokenizer_dir and not os.path.isdir(args.tokenizer_dir):
        raise InputError("--tokenizer-dir naming a folder", f"{args.tokenizer_dir!r}", "check the path")
    check_tiles(TileSpec(args.tile, args.tile_overlap, args.temporal_tile, args.temporal_overlap))
    bad = [(flag, value, want) for flag, value, want, ok in (
        ("--steps", args.steps, "at least 1", args.steps >= 1),
        ("--cfg", args.cfg, "at least 1 (1 = off)", args.cfg >= 1),
        ("--denoise", args.denoise, "from 0 to 1", 0 <= args.denoise <= 1),
        ("--prefetch", args.prefetch, "from 0 to 8", 0 <= args.prefetch <= 8),
        ("--vram-budget", args.vram_budget, "0 (automatic) or more", args.vram_budget is None or args.vram_budget >= 0),
        ("--flow-shift", args.flow_shift, "above 0", args.flow_shift > 0),
        ("--cache-threshold", args.cache_threshold, "0 or more",
         args.cache_threshold is None or args.cache_threshold >= 0),  # None: the method's default
        ("--cache-start", args.cache_start, "from 0 to 1", 0 <= args.cache_start <= 1),
        ("--cache-end", args.cache_end, "from 0 to 1", 0 <= args.cache_end <= 1),
        ("--cache-max-skips", args.cache_max_skips, "0 or more", args.cache_max_skips >= 0),
        ("--image-interleave", args.image_interleave, "from 0 (automatic) to 8", 0 <= args.image_interleave <= 8)) if not ok]
    if bad:
        flag, value, want = bad[0]
        raise InputError(f"{flag} {want}", f"{value}", f"fix {flag} (see python -m hystream generate --help)")
    if args.cfg > 1 and args.negative is None:
        raise InputError("--negative when --cfg > 1", "no negative prompt", "add --negative \"…\" or set --cfg 1")
    if args.input_video:
        probe_video(args.input_video)
    if args.image:
        from ..video_io import read_image

        return read_image(args.image)  # a file that is not a picture fails here, before any model work
    return None


def apply_preset(args) -> None:
    """--steps, --flow-shift, --guidance and --cfg not given: the DiT variant's settings (its family's presets,
    read from the file name and weights); with cfg > 1 and no --negative, the negative the family's reference uses."""
    from ..loading import read_dit_config

    family, cfg = read_dit_config(args.dit)
    label, chosen = family.sampler_preset(args.dit, cfg)
    given = {"steps": chosen.steps, "flow_shift": chosen.flow_shift, "guidance": chosen.embedded_guidance, "cfg": chosen.cfg}
    taken = {k: v for k, v in given.items() if getattr(args, k) is None}
    for k, v in taken.items():
        setattr(args, k, v)
    if args.cfg > 1 and args.negative is None and family.default_negative is not None:
        args.negative = family.default_negative
    if taken and label:
        print(f"{family.title} {label}: " + ", ".join(f"{k.replace('_', ' ')} {v:g}" for k, v in taken.items()
                                                     if v is not None), file=sys.stderr)


def image_prompt_plan(args) -> tuple[str | None, int]:
    """(the vision tower's file, image interleave) when the DiT's family puts the start image in the prompt
    (HunyuanVideo-I2V), else (None, 0): the DiT's family decides from its header."""
    from ..loading import read_dit_config

    if not args.image:
        return None, 0
    family, cfg = read_dit_config(args.dit)
    return family.image_prompt(cfg, args.llm, args.vision, args.image_interleave)


def comfyui_tokenizers() -> dict[str, str] | None:
    """ComfyUI's bundled tokenizers when the pack runs from ComfyUI/custom_nodes or $COMFYUI_PATH is set."""
    from ..comfy_server import host_of_this_pack
    from ..families.registry import bundled_tokenizer_dirs

    root = host_of_this_pack()
    return bundled_tokenizer_dirs(root) if root else None
