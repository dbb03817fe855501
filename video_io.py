"""Video files in and out through imageio-ffmpeg's static ffmpeg binary (no system install). Frames are
ComfyUI IMAGE tensors: [F, H, W, 3] float in [0, 1].

Writing is video_writer.py (re-exported here). Reading checks the decoded size against the RAM left before
decoding.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from .errors import InputError, NotFoundError
from .offload.host_memory import available_ram_bytes
from .video_writer import Mp4Writer, check_output_settings, write_mp4  # noqa: F401  (where callers import them)

DECODE_BYTES_PER_VALUE = 5  # uint8 frames while reading + the float32 IMAGE they become


def probe_video(path: str) -> dict:
    """ffmpeg's description of the first video stream: size, fps, duration (nothing decoded)."""
    import imageio_ffmpeg

    if not os.path.isfile(path):
        raise NotFoundError("a video file", f"nothing at {path!r}", "upload the video in the node or put it in ComfyUI/input")
    try:
        reader = imageio_ffmpeg.read_frames(path, pix_fmt="rgb24")
        meta = reader.__next__()
        reader.close()
    except (RuntimeError, OSError, StopIteration) as e:
        raise InputError("a video ffmpeg can read (mp4, webm, mkv, mov, gif …)",
                         f"{os.path.basename(path)}: {str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__}",
                         "convert the file to mp4 (H.264)") from None
    return meta


def expected_frames(meta: dict, max_frames: int, frame_step: int) -> int | None:
    """How many frames read_video would return, from the container's duration (None if unknown)."""
    fps, duration = float(meta.get("fps") or 0), float(meta.get("duration") or 0)
    if fps <= 0 or duration <= 0:
        return max_frames or None
    total = -(-round(fps * duration) // frame_step)
    return min(total, max_frames) if max_frames else total


def read_video(path: str, max_frames: int = 0, frame_step: int = 1) -> tuple[torch.Tensor, float]:
    """(frames [F, H, W, 3] float32 in [0, 1], fps). `max_frames` 0 = all; every `frame_step`-th frame.
    The decoded size is checked against the RAM left before decoding (and again while decoding, for
    containers that do not state their duration)."""
    import imageio_ffmpeg

    if frame_step < 1 or max_frames < 0:
        raise InputError("frame_step ≥ 1 and max_frames ≥ 0", f"frame_step {frame_step}, max_frames {max_frames}",
                         "use frame_step 1 and max_frames 0 (all frames)")
    meta = probe_video(path)
    width, height = meta["size"]
    frame_bytes = width * height * 3 * DECODE_BYTES_PER_VALUE
    free = available_ram_bytes()
    expected = expected_frames(meta, max_frames, frame_step)
    if free is not None and expected is not None and expected * frame_bytes > free:
        raise _too_big(path, expected, width, height, free)
    frames = []
    reader = imageio_ffmpeg.read_frames(path, pix_fmt="rgb24")
    try:
        reader.__next__()
        for i, raw in enumerate(reader):
            if i % frame_step:
                continue
            frames.append(np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3))
            if max_frames and len(frames) >= max_frames:
                break
            if free is not None and len(frames) % 16 == 0 and len(frames) * frame_bytes > free:
                raise _too_big(path, len(frames), width, height, free, partial=True)
    except (RuntimeError, OSError) as e:
        raise InputError("a video ffmpeg can decode to the end", f"{os.path.basename(path)}: {e}",
                         "re-encode the file as mp4 (H.264)") from None
    finally:
        reader.close()
    if not frames:
        raise InputError("at least one video frame", f"none in {os.path.basename(path)}", "check the file plays")
    video = torch.empty(len(frames), height, width, 3, dtype=torch.float32)
    out = video.numpy()
    for i, frame in enumerate(frames):  # converted frame by frame: no second whole-video uint8 copy
        out[i] = frame
    frames.clear()
    return video.div_(255.0), float(meta.get("fps") or 24.0) / frame_step


def _too_big(path, n, width, height, free, partial=False) -> InputError:
    need = n * width * height * 3 * DECODE_BYTES_PER_VALUE
    return InputError(
        "a video whose decoded frames fit in the RAM left",
        f"{'more than ' if partial else ''}{n} frames of {width}×{height} in {os.path.basename(path)}: "
        f"{need / 1024 ** 3:.1f} GiB to decode, {free / 1024 ** 3:.1f} GiB free",
        "set max_frames (e.g. 129) and/or frame_step, or use a shorter or smaller video")


def read_image(path: str) -> torch.Tensor:
    """A still image (png, jpg, webp, …) → IMAGE [1, H, W, 3] float32 in [0, 1] (alpha dropped)."""
    if not os.path.isfile(path):
        raise NotFoundError("a start image", f"no file at {path!r}", "check the --image path")
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise InputError("Pillow to read the start image", "it is not installed", "pip install pillow") from None
    try:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise InputError("a still image file (png, jpg, webp)", f"{os.path.basename(path)}: {e}",
                         "give --image a picture file") from None
    return torch.from_numpy(rgb.copy()).float()[None] / 255.0
