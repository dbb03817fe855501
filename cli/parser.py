"""The command line's parser: each command's flags, their help and defaults."""

from __future__ import annotations

import argparse

from ..quant.kinds import PLAN_TYPES

USAGE = """Headless HyStream: `python -m hystream <command>`.

generate  prompt → mp4 with real model files, the same stages as the nodes (text encode → [video encode]
          → sample → decode), tqdm progress and a per-stage report (time, peak device memory, bytes streamed).
demo      builds tiny random models in the real layouts, starts the real ComfyUI (COMFYUI_PATH or
          ../shared/comfyui) with this pack installed for the run, queues the example API workflow and
          writes the mp4 and a report; without a ComfyUI it runs the same models headless.
plan      before running: each stage's device memory at a size, whether it fits --vram, the settings
smoke     a tiny random DiT through the real loader, streamed vs resident: bit-identical?
"""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The usage text (USAGE) as written, and each flag's default (where it has one) after its help."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if not (default is None or default is False or default is argparse.SUPPRESS or action.required):
            text += " (default: %(default)s)"
        return text


def build_parser() -> argparse.ArgumentParser:
    from ..families import registry
    from ..loaders.dtypes import COMPUTE_DTYPES, WEIGHT_DTYPES
    from ..pipeline import SampleSettings
    from ..sampling.step_caches import METHODS
    from ..sampling.step_caches import defaults as cache_defaults
    from ..vae.tiling import TileSpec
    from .demo import cmd_demo  # the commands import build_parser (demo runs generate's)
    from .generate import cmd_generate
    from .plan import cmd_plan, cmd_smoke

    d, t = SampleSettings(), TileSpec()  # the defaults the nodes show
    p = argparse.ArgumentParser(prog="python -m hystream", description=USAGE, formatter_class=HelpFormatter)
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
    g.set_defaults(func=cmd_generate, command_name="generate")

    dm = command("demo", "tiny random models through the real ComfyUI (or headless)")
    dm.add_argument("--out", default="hystream_demo", help="folder for the models, the mp4 and the report")
    dm.add_argument("--prompt", default="A red fox trots through fresh snow in a birch forest at sunrise.",
                    help="the prompt queued in the example workflow")
    dm.add_argument("--headless", action="store_true", help="skip ComfyUI even when one is found")
    dm.set_defaults(func=cmd_demo, command_name="demo")

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
    pl.set_defaults(func=cmd_plan, command_name="plan")

    s = command("smoke", "tiny random DiT: streamed vs resident, through the real loader")
    s.add_argument("--out", help="folder for the random checkpoint (default: a temp folder)")
    s.add_argument("--device", default="cpu", help="cuda or cpu")
    s.add_argument("--prefetch", type=int, default=1, help="blocks copying ahead of the compute")
    s.add_argument("--width", type=int, default=128, help="video width in pixels")
    s.add_argument("--height", type=int, default=96, help="video height in pixels")
    s.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    s.set_defaults(func=cmd_smoke, command_name="smoke")
    return p
