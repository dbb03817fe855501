"""Video files in and out through imageio-ffmpeg's static ffmpeg binary (no system install). Frames are
ComfyUI IMAGE tensors: [F, H, W, 3] float in [0, 1].

Writing runs ffmpeg ourselves so its exit status and error output are checked (imageio-ffmpeg's writer
ignores both: a full disk would give "success" and no playable file). The video goes to a temporary name
beside the target and is renamed only once ffmpeg succeeded, so a failed write never leaves a truncated
file under the real name. Reading checks the decoded size against the RAM left before decoding.
"""

from __future__ import annotations

import os
import subprocess
import tempfile

import numpy as np
import torch

from .errors import InputError, NotFoundError, OutputError
from .offload.host_memory import available_ram_bytes

MAX_FPS = 240.0
DECODE_BYTES_PER_VALUE = 5  # uint8 frames while reading + the float32 IMAGE they become


def check_output_settings(path: str, fps: float, crf: int) -> str:
    """Everything a later write needs, checked before any model work: the absolute path to write."""
    if not isinstance(path, str) or not path.strip():
        raise InputError("an output file name ending in .mp4", repr(path), "pass --out video.mp4")
    if not path.lower().endswith(".mp4"):
        raise InputError("an output file name ending in .mp4 (H.264)", repr(path), "name the output e.g. video.mp4")
    if not 0 < fps <= MAX_FPS:
        raise InputError(f"fps above 0 and at most {MAX_FPS:g}", f"{fps}", "use 24 (HunyuanVideo's frame rate)")
    if not 0 <= int(crf) <= 51 or int(crf) != crf:
        raise InputError("crf a whole number from 0 to 51 (H.264 quality; lower is better)", f"{crf}",
                         "use 19 (visually lossless)")
    out = os.path.abspath(path)
    folder = os.path.dirname(out)
    if os.path.isdir(out):
        raise InputError("an output file name", f"a folder at {out!r}", "name a file inside it, e.g. video.mp4")
    probe = folder
    while not os.path.isdir(probe):  # the folder will be created: the nearest existing parent must be writable
        parent = os.path.dirname(probe)
        if parent == probe or (os.path.exists(probe) and not os.path.isdir(probe)):
            raise OutputError("a folder for the output", f"{probe!r} is not a folder", "choose another output path")
        probe = parent
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError("a writable folder for the output", f"no write permission in {probe!r}",
                          "choose an output path in a folder you can write to")
    return out


def write_mp4(frames: torch.Tensor, path: str, fps: float = 24.0, crf: int = 19) -> str:
    """Encode frames as H.264 (yuv420p, playable everywhere); odd sides are padded by one pixel. Raises
    OutputError saying where and why when ffmpeg cannot write the file; never leaves a partial file."""
    import imageio_ffmpeg

    if not torch.is_tensor(frames) or frames.dim() != 4 or frames.shape[-1] not in (3, 4) or frames.shape[0] < 1:
        raise InputError("IMAGE frames [F, H, W, 3]", f"shape {list(getattr(frames, 'shape', []))}",
                         "connect decoded video frames")
    out = check_output_settings(path, fps, crf)
    height, width = frames.shape[1] + frames.shape[1] % 2, frames.shape[2] + frames.shape[2] % 2
    try:
        os.makedirs(os.path.dirname(out), exist_ok=True)
        fd, partial = tempfile.mkstemp(prefix=".partial-", suffix=".mp4", dir=os.path.dirname(out))
        os.close(fd)
    except OSError as e:
        raise OutputError("a writable output folder", f"{e.strerror or e} at {os.path.dirname(out)!r}",
                          "free disk space or choose another output folder") from None
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo", "-vcodec", "rawvideo",
           "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", f"{float(fps):.6g}", "-i", "-", "-an",
           "-vcodec", "libx264", "-pix_fmt", "yuv420p", "-crf", str(int(crf)), "-f", "mp4", partial]
    with tempfile.TemporaryFile() as log:  # a file, not a pipe: ffmpeg can never block on its own messages
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log)
        pipe_error = None
        try:
            for i in range(frames.shape[0]):  # one frame at a time: never a uint8 copy of the whole video
                frame = (frames[i, :, :, :3].float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
                if frame.shape[0] != height or frame.shape[1] != width:  # yuv420p needs even sides
                    pad = ((0, height - frame.shape[0]), (0, width - frame.shape[1]), (0, 0))
                    frame = np.pad(frame, pad, mode="edge")
                try:
                    proc.stdin.write(np.ascontiguousarray(frame).tobytes())
                except (BrokenPipeError, OSError) as e:
                    pipe_error = e
                    break
            try:
                proc.stdin.close()
            except OSError:
                pass
            code = proc.wait()
            log.seek(0)
            stderr = log.read().decode(errors="replace").strip()
        except BaseException:
            proc.kill()
            proc.wait()
            _remove(partial)
            raise
    if code != 0 or pipe_error is not None or os.path.getsize(partial) == 0:
        _remove(partial)
        why = ffmpeg_cause(stderr) or (f"ffmpeg exited with status {code}" if code else str(pipe_error))
        raise OutputError(f"the mp4 written to {out!r}", f"ffmpeg failed: {why}",
                          "check free disk space and write permission there, or choose another output folder")
    try:
        os.replace(partial, out)
    except OSError as e:
        _remove(partial)
        raise OutputError(f"the mp4 at {out!r}", f"renaming the finished file failed: {e.strerror or e}",
                          "check the folder's permissions, or choose another output path") from None
    return out


OS_ERRORS = ("No space left on device", "Disk quota exceeded", "File too large", "Permission denied",
             "Read-only file system")


def ffmpeg_cause(stderr: str) -> str:
    """The line of ffmpeg's log that names the cause: an OS error where there is one (a full disk shows
    as "No space left on device" early, then as a vaguer last line), else the last line."""
    lines = stderr.splitlines()
    return next((line for line in lines if any(e in line for e in OS_ERRORS)), lines[-1] if lines else "")


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


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
