"""Headless HyStream: `python -m hystream <command>`.

generate  prompt → mp4 with real model files, the same stages as the nodes (text encode → [video encode]
          → sample → decode), tqdm progress and a per-stage report (time, peak device memory, bytes streamed).
demo      builds tiny random models in the real layouts, starts the real ComfyUI (COMFYUI_PATH or
          ../shared/comfyui) with this pack installed for the run, queues the example API workflow and
          writes the mp4 and a report; without a ComfyUI it runs the same models headless.
plan      before running: each stage's device memory at a size, whether it fits --vram, the settings
smoke     a tiny random DiT through the real loader, streamed vs resident: bit-identical?
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from contextlib import contextmanager

from .errors import HyStreamError, InputError
from .quant.kinds import PLAN_TYPES
from .sizes import GIB


# -- reporting -------------------------------------------------------------------------------------
class Report:
    def __init__(self, device):
        import torch

        self.torch, self.device, self.stages = torch, device, []

    @contextmanager
    def stage(self, name: str, streamer=None):
        torch = self.torch
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        if streamer is not None:
            streamer.stats.reset()
        t0 = time.perf_counter()
        entry = {"stage": name}
        try:
            yield entry
        finally:
            entry["seconds"] = round(time.perf_counter() - t0, 2)
            if self.device.type == "cuda":
                entry["peak_vram_gib"] = round(torch.cuda.max_memory_allocated(self.device) / GIB, 3)
            if streamer is not None:
                stats = streamer.stats
                entry.update(streamed_gib=round(stats.bytes_copied / GIB, 3), wait_s=round(stats.wait_seconds, 2),
                             blocks_resident=stats.blocks_resident, blocks_streamed=stats.blocks_streamed,
                             forwards=stats.forwards)
                if self.device.type != "cuda":
                    entry["peak_device_weights_gib"] = round(stats.peak_device_bytes / GIB, 3)
            self.stages.append(entry)

    def print(self) -> None:
        for e in self.stages:
            extras = ", ".join(f"{k} {v}" for k, v in e.items() if k not in ("stage", "seconds"))
            print(f"  {e['stage']:<12s} {e['seconds']:>8.2f} s   {extras}")


def tqdm_bar(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="step" if desc == "sampling" else "it", leave=True)


# -- generate --------------------------------------------------------------------------------------
def parse_lora(spec: str) -> tuple[str, float]:
    path, _, strength = spec.rpartition(":") if ":" in spec else (spec, "", "1")
    try:
        return path, float(strength)
    except ValueError:
        raise InputError("--lora FILE:STRENGTH", repr(spec), "e.g. --lora my_lora.safetensors:0.8") from None


def check_generate(args, loras):
    """Everything the run will need, checked before any model is opened: a bad --out, --fps, tile size or
    missing file fails in a second, not after the whole generation. Returns the start image (or None)."""
    from . import pipeline
    from .loading import read_dit_config
    from .vae.tiling import TileSpec, check_tiles
    from .video_io import check_output_settings, probe_video

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
        from .video_io import read_image

        return read_image(args.image)  # a file that is not a picture fails here, before any model work
    return None


def apply_preset(args) -> None:
    """--steps, --flow-shift, --guidance and --cfg not given: the DiT variant's settings (its family's presets,
    read from the file name and weights); with cfg > 1 and no --negative, the negative the family's reference uses."""
    from .loading import read_dit_config

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
    from .loading import read_dit_config

    if not args.image:
        return None, 0
    family, cfg = read_dit_config(args.dit)
    return family.image_prompt(cfg, args.llm, args.vision, args.image_interleave)


def comfyui_tokenizers() -> dict[str, str] | None:
    """ComfyUI's bundled tokenizers when the pack runs from ComfyUI/custom_nodes or $COMFYUI_PATH is set."""
    from .comfy_server import host_of_this_pack
    from .families.registry import bundled_tokenizer_dirs

    root = host_of_this_pack()
    return bundled_tokenizer_dirs(root) if root else None


def return_freed_memory_to_the_os() -> None:
    """glibc raises its mmap threshold each time a large block is freed, after which a stage's freed tensors
    stay in the heap and the next stage's peak sits on top of them (the text encoder's ~0.7 GiB under the
    DiT's, at full size). A fixed threshold keeps large blocks mapped: freed, they go back to the OS. Only in
    the CLI's own process, never in ComfyUI's."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to do
        return
    m_mmap_threshold = -3
    libc.mallopt(m_mmap_threshold, 128 * 1024)


def cmd_generate(args) -> dict:
    import torch

    return_freed_memory_to_the_os()

    from . import pipeline
    from .loaders.lora import load_lora
    from .loading import load_dit, load_text_encoder, load_vae, read_dit_config
    from .sampling.step_cache import StepCacheSettings, report_line
    from .sampling.step_caches.defaults import default_threshold
    from .vae.tiling import Hooks, TileSpec
    from .video_io import read_video, write_mp4

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
                   reserve_bytes=int(args.reserve_vram * GIB))
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
    with report.stage("decode"):
        bar = tqdm_bar(1, "VAE decode")
        video = pipeline.decode(vae, latent, tiles, Hooks(progress=lambda d, t: _tick(bar, d, t)))
        video = pipeline.drop_leading_frames(video, drop)
        bar.close()
    vae.close()
    out = write_mp4(video, args.out, args.fps, args.crf)
    print(f"wrote {out}: {video.shape[0]} frames of {video.shape[2]}x{video.shape[1]}")
    report.print()
    return {"command": "generate", "out": out, "frames": video.shape[0], "width": video.shape[2],
            "height": video.shape[1], "device": str(device), "loras": lora_notes, "stages": report.stages}


def generate_framepack(args, positive, negative, start_image, device, report, tiles) -> dict:
    """--framepack: a long video section by section (long_video.py), each section decoded and written to the
    mp4 as soon as it is sampled."""
    from . import long_video, pipeline
    from .loading import load_dit, load_vae
    from .video_writer import Mp4Writer

    vae = load_vae(args.vae, device)
    dit = load_dit(args.dit, device, weight_dtype=args.weight_dtype, prefetch_blocks=args.prefetch,
                   vram_budget_gb=args.vram_budget, compute=args.compute_dtype, reserve_bytes=int(args.reserve_vram * GIB))
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
                Mp4Writer(args.out, args.width, args.height, sampler.fps, args.crf) as writer:
            bar, done = tqdm_bar(total * args.steps, f"{total} sections"), [0]
            frames = long_video.sample_long_video(
                dit, positive, negative, start, states, settings, long_video.decoder(vae, tiles), writer.write,
                on_step=lambda s: _tick(bar, done[0] * args.steps + s.index + 1, total * args.steps),
                on_section=lambda k, n: done.__setitem__(0, k))
            bar.close()
            entry.update(sections=total, order=order)
    finally:
        dit.close()
        vae.close()
        between_stages(device)
    print(f"wrote {writer.path}: {frames} frames of {args.width}x{args.height} at {sampler.fps:g} fps "
          f"({total} sections, {order})")
    report.print()
    return {"command": "generate", "out": writer.path, "frames": frames, "width": args.width, "height": args.height,
            "device": str(device), "sections": total, "order": order, "stages": report.stages}


def between_stages(device) -> None:
    """Nothing of a finished stage stays on the GPU, not even in PyTorch's cache: the next stage's
    automatic budget sees the whole card (cached blocks count as used in mem_get_info)."""
    import gc

    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _tick(bar, done: int, total: int) -> None:
    bar.total = total
    bar.n = done
    bar.refresh()


# -- demo ------------------------------------------------------------------------------------------
DEMO_SIZE = {"width": 128, "height": 96, "frames": 17, "steps": 8}


def demo_workflow(repo: str) -> dict:
    with open(os.path.join(repo, "example_workflows", "api", "hunyuan_t2v_lowvram.api.json")) as f:
        wf = json.load(f)
    for node in wf.values():  # tiny random models: a small video, few steps
        if node["class_type"] == "EmptyHunyuanLatentVideo":
            node["inputs"].update(width=DEMO_SIZE["width"], height=DEMO_SIZE["height"], length=DEMO_SIZE["frames"])
        if node["class_type"] == "HyStreamSampler":
            node["inputs"].update(steps=DEMO_SIZE["steps"])
        if node["class_type"] == "HyStreamSaveVideo":
            node["inputs"].update(filename_prefix="hystream_demo")
    return wf


def cmd_demo(args) -> dict:
    from .comfy_server import REPO, ComfyHost, fetch_output, find_comfyui
    from .families import registry

    out_dir = os.path.abspath(args.out)
    os.makedirs(out_dir, exist_ok=True)
    print("building tiny random models in the real layouts …")
    models = registry.default().write_demo_models(os.path.join(out_dir, "models"))
    out = os.path.join(out_dir, "hystream_demo.mp4")
    snapshot = None if args.headless else find_comfyui()
    if snapshot is None:
        print("running the same models through the headless pipeline" if args.headless else
              "no ComfyUI found (set COMFYUI_PATH, or place it at ../shared/comfyui): running the same models "
              "through the headless pipeline instead")
        gen = build_parser().parse_args([  # generate's own defaults for everything not named here
            "generate", "--dit", models["dit"], "--llm", models["llm"], "--clip", models["clip"], "--vae", models["vae"],
            "--prompt", args.prompt, "--lora", f"{models['lora']}:1.0", "--width", str(DEMO_SIZE["width"]),
            "--height", str(DEMO_SIZE["height"]), "--frames", str(DEMO_SIZE["frames"]),
            "--steps", str(DEMO_SIZE["steps"]), "--denoise", "1.0", "--out", out])
        gen.vram_budget = None  # tiny models: no residency planning
        return dict(cmd_generate(gen), command="demo", host=None)

    print(f"starting ComfyUI from {snapshot} with HyStream installed for this run …")
    folders = {k: os.path.join(models["models"], k) for k in ("diffusion_models", "text_encoders", "vae", "loras", "clip_vision")}
    host = ComfyHost(snapshot, tempfile.mkdtemp(prefix="hystream-demo-"), folders)
    t0 = time.perf_counter()
    host.start()
    try:
        print(f"ComfyUI is up at {host.url} ({time.perf_counter() - t0:.0f} s); queueing the example workflow …")
        wf = demo_workflow(REPO)
        wf["4"]["inputs"]["prompt"] = args.prompt
        from .comfy_server import queue_and_wait

        t1 = time.perf_counter()
        entry = queue_and_wait(host, wf, report=lambda s: print(f"\r  running … {s:.0f} s", end="", flush=True))
        print()
        item = entry["outputs"]["8"]["images"][0]
        fetch_output(host, item, out)
        log = host.log()
    finally:
        host.stop()
    from .video_io import read_video

    frames, fps = read_video(out)
    lines = [line for line in log.splitlines() if "HyStream sampler:" in line]
    print(f"wrote {out}: {frames.shape[0]} frames of {frames.shape[2]}x{frames.shape[1]} at {fps:g} fps")
    if lines:
        print(lines[-1].strip())
    return {"command": "demo", "host": snapshot, "out": out, "frames": frames.shape[0], "width": frames.shape[2],
            "height": frames.shape[1], "seconds": round(time.perf_counter() - t1, 2),
            "sampler_log": lines[-1].strip() if lines else None}


# -- plan ------------------------------------------------------------------------------------------
def cmd_plan(args) -> dict:
    from . import planner
    from .families import registry

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


# -- smoke -----------------------------------------------------------------------------------------
def cmd_smoke(args) -> dict:
    import torch

    from .families import registry
    from .loading import load_dit

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


# -- plumbing --------------------------------------------------------------------------------------
class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The module docstring as written, and each flag's default (where it has one) after its help."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if not (default is None or default is False or default is argparse.SUPPRESS or action.required):
            text += " (default: %(default)s)"
        return text


def build_parser() -> argparse.ArgumentParser:
    from .families import registry
    from .loaders.dtypes import COMPUTE_DTYPES, WEIGHT_DTYPES
    from .pipeline import SampleSettings
    from .sampling.step_caches import METHODS
    from .sampling.step_caches import defaults as cache_defaults
    from .vae.tiling import TileSpec

    d, t = SampleSettings(), TileSpec()  # the defaults the nodes show
    p = argparse.ArgumentParser(prog="python -m hystream", description=__doc__, formatter_class=HelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_, description=help_, formatter_class=HelpFormatter)

    g = command("generate", "prompt → mp4 with real model files")
    for name, help_ in (("dit", "the DiT file or diffusers folder; its weights tell the model family"),
                        ("llm", f"the language model file or folder ({registry.file_examples('llm')})"),
                        ("clip", f"the second text encoder ({registry.file_examples('second_text')})"),
                        ("vae", "the VAE file or folder")):
        g.add_argument(f"--{name}", required=True, help=help_)
    g.add_argument("--prompt", required=True, help="what the video shows (up to 256 tokens)")
    g.add_argument("--negative", help="negative prompt (used when --cfg > 1; not given: HunyuanVideo 1.5 encodes an "
                   "empty one, as its reference pipelines do)")
    g.add_argument("--width", type=int, default=848, help="video width in pixels, a multiple of 16")
    g.add_argument("--height", type=int, default=480, help="video height in pixels, a multiple of 16")
    g.add_argument("--frames", type=int, default=61, help="4k+1 frames (video-to-video: at most this many are read)")
    g.add_argument("--steps", type=int, help=f"sampling steps (default: the DiT variant's; {d.steps} for 1.0)")
    g.add_argument("--seed", type=int, default=d.seed, help="noise seed (same seed, same video as diffusers/ComfyUI)")
    g.add_argument("--flow-shift", type=float, help=f"schedule shift (default: the variant's; {d.flow_shift:g} for 1.0)")
    g.add_argument("--guidance", type=float, help=f"embedded guidance (1.0; default {d.embedded_guidance:g})")
    g.add_argument("--cfg", type=float, help="true CFG scale (> 1 runs the negative prompt; default: the variant's: "
                   f"{d.cfg:g} for 1.0, 6 for 1.5, 1 for its distilled models)")
    g.add_argument("--lora", action="append", metavar="FILE:STRENGTH", help="a LoRA and its strength (repeatable)")
    g.add_argument("--input-video", help="video-to-video: the input video (cropped to 4k+1 frames and sides that "
                                         "are multiples of 16)")
    g.add_argument("--image", help="image-to-video: the start image (png/jpg), cropped to the video's aspect and "
                                    "resized; needs an I2V DiT (HunyuanVideo-I2V, SkyReels-I2V)")
    g.add_argument("--vision", help=f"the vision tower ({registry.file_examples('vision')}; "
                                     "default: the --llm folder when it holds one)")
    g.add_argument("--image-interleave", type=int, default=0, help="HunyuanVideo-I2V: keep every n-th image token "
                                                                   "(0 = the reference's: 2 latent concat, 4 token replace)")
    g.add_argument("--denoise", type=float, default=0.6, help="video-to-video strength (1 = ignore the input)")
    g.add_argument("--vram-budget", type=float, default=0.0, help="GB for the sampling stage (0 = automatic)")
    g.add_argument("--prefetch", type=int, default=1, help="blocks copying ahead of the compute (0 = synchronous)")
    g.add_argument("--weight-dtype", default="auto", choices=WEIGHT_DTYPES,
                   help="how the DiT's weights are stored (auto = as in the file)")
    g.add_argument("--compute-dtype", default="auto", choices=COMPUTE_DTYPES,
                   help="the DiT's compute dtype (auto: bf16 on sm80+, fp32 on older GPUs and the CPU; fp16 "
                        "overflows on HunyuanVideo)")
    g.add_argument("--reserve-vram", type=float, default=0.0, help="GB of VRAM the automatic budget leaves free "
                                                                  "for other programs")
    g.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    g.add_argument("--tokenizer-dir", help="folder with the tokenizer files (default: beside the weights, then "
                                           "ComfyUI's bundled ones)")
    g.add_argument("--step-cache", default="off", choices=("off", *METHODS), help="skip steps that barely change: "
                   f"{', '.join(METHODS)} (a skipped step also streams no weights)")
    g.add_argument("--cache-threshold", type=float, default=None, help="step cache threshold, higher skips more "
                   f"(not given: the method's default; recommended: {cache_defaults.recommended_text()})")
    g.add_argument("--cache-start", type=float, default=cache_defaults.START,
                   help="fraction of the steps always computed first")
    g.add_argument("--cache-end", type=float, default=cache_defaults.END,
                   help="steps from this fraction on are always computed")
    g.add_argument("--cache-max-skips", type=int, default=cache_defaults.MAX_SKIPS,
                   help="most consecutive skipped steps (0 = no limit)")
    g.add_argument("--tile", type=int, default=t.size, help="VAE spatial tile in pixels (0 = automatic)")
    g.add_argument("--tile-overlap", type=int, default=t.overlap, help="VAE spatial tile overlap in pixels")
    g.add_argument("--temporal-tile", type=int, default=t.temporal, help="VAE temporal tile in frames (0 = automatic)")
    g.add_argument("--temporal-overlap", type=int, default=t.temporal_overlap, help="VAE temporal tile overlap in frames")
    g.add_argument("--framepack", action="store_true", help="a long video from --image with a FramePack DiT, section "
                   "by section (needs --vision: SigLIP); its length is --seconds at 30 fps")
    g.add_argument("--seconds", type=float, default=5.0, help="--framepack: the video's length in seconds")
    g.add_argument("--window", type=int, default=9, help="--framepack: latent frames per section")
    g.add_argument("--order", default="auto", choices=("auto", "inverted", "forward"),
                   help="--framepack: auto = forward for FramePack-F1 files (F1 in the name), else inverted")
    g.add_argument("--fps", type=float, default=24.0, help="frames per second of the mp4")
    g.add_argument("--crf", type=int, default=19, help="H.264 quality, 0-51 (lower is better and bigger)")
    g.add_argument("--out", default="out.mp4", help="the mp4 to write (a report is written beside it)")
    g.set_defaults(func=cmd_generate)

    dm = command("demo", "tiny random models through the real ComfyUI (or headless)")
    dm.add_argument("--out", default="hystream_demo", help="folder for the models, the mp4 and the report")
    dm.add_argument("--prompt", default="A red fox trots through fresh snow in a birch forest at sunrise.",
                    help="the prompt queued in the example workflow")
    dm.add_argument("--headless", action="store_true", help="skip ComfyUI even when one is found")
    dm.set_defaults(func=cmd_demo)

    pl = command("plan", "how much VRAM each stage needs at a size, and the settings that fit")
    pl.add_argument("--width", type=int, default=848, help="video width in pixels")
    pl.add_argument("--height", type=int, default=480, help="video height in pixels")
    pl.add_argument("--frames", type=int, default=61, help="video frames (4k+1)")
    pl.add_argument("--vram", type=float, help="GPU memory to fit, in GiB")
    pl.add_argument("--family", default="hunyuanvideo", help="the model family: hunyuanvideo (1.0) or hunyuanvideo15 (1.5)")
    pl.add_argument("--weight-dtype", default="bf16", choices=["bf16", "fp8_e4m3fn", *PLAN_TYPES],
                    help="DiT weights as stored: bf16, fp8, or a GGUF file's quantisation type (Q4_K for a Q4_K_M file)")
    pl.add_argument("--prefetch", type=int, default=1, help="blocks copying ahead of the compute")
    pl.add_argument("--compute-capability", type=float, help="the GPU's CUDA compute capability, e.g. 7.5 (RTX 20xx, "
                                                             "T4), 8.6 (RTX 30xx), 8.9 (RTX 40xx); default: 8.0 or newer")
    pl.set_defaults(func=cmd_plan)

    s = command("smoke", "tiny random DiT: streamed vs resident, through the real loader")
    s.add_argument("--out", help="folder for the random checkpoint (default: a temp folder)")
    s.add_argument("--device", default="cpu", help="cuda or cpu")
    s.add_argument("--prefetch", type=int, default=1, help="blocks copying ahead of the compute")
    s.add_argument("--width", type=int, default=128, help="video width in pixels")
    s.add_argument("--height", type=int, default=96, help="video height in pixels")
    s.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    s.set_defaults(func=cmd_smoke)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = args.func(args)
    except HyStreamError as e:  # user errors: the message says what to do, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        if str(e).startswith("ComfyUI"):
            print(f"error: {e}", file=sys.stderr)
            return 3
        raise
    if "command" in report and report["command"] in ("generate", "demo"):
        with open(os.path.splitext(report.get("out", "report"))[0] + ".report.json", "w") as f:
            json.dump(report, f, indent=2)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
