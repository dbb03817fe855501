"""Writing H.264 mp4 files through imageio-ffmpeg's static ffmpeg binary, a frame at a time.

ffmpeg runs as our own subprocess so its exit status and error output are checked (imageio-ffmpeg's writer
ignores both: a full disk would give "success" and no playable file). The video goes to a temporary name beside
the target and is renamed only once ffmpeg succeeded, so a failed or cancelled write never leaves a truncated
file under the real name. `Mp4Writer` takes frames as they are ready (a long video written while it is made);
`write_mp4` writes frames that are all at hand.
"""

from __future__ import annotations

import os
import subprocess
import tempfile

import numpy as np
import torch

from .errors import InputError, OutputError

MAX_FPS = 240.0


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


class Mp4Writer:
    """with Mp4Writer(path, width, height, fps, crf) as w: w.write(frames) ... — frames [F, H, W, 3] in [0, 1]
    as they come; the file appears at `path` when the block ends without an error (`w.path`, `w.frames`)."""

    def __init__(self, path: str, width: int, height: int, fps: float = 24.0, crf: int = 19):
        self.out = check_output_settings(path, fps, crf)
        self.size = (int(height), int(width))
        self.even = (self.size[0] + self.size[0] % 2, self.size[1] + self.size[1] % 2)  # yuv420p needs even sides
        self.fps, self.crf, self.frames, self.path = fps, int(crf), 0, None
        self._proc = self._log = self._partial = self._pipe_error = None

    def __enter__(self):
        import imageio_ffmpeg

        try:
            os.makedirs(os.path.dirname(self.out), exist_ok=True)
            fd, self._partial = tempfile.mkstemp(prefix=".partial-", suffix=".mp4", dir=os.path.dirname(self.out))
            os.close(fd)
        except OSError as e:
            raise OutputError("a writable output folder", f"{e.strerror or e} at {os.path.dirname(self.out)!r}",
                              "free disk space or choose another output folder") from None
        height, width = self.even
        cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo", "-vcodec", "rawvideo",
               "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", f"{float(self.fps):.6g}", "-i", "-", "-an",
               "-vcodec", "libx264", "-pix_fmt", "yuv420p", "-crf", str(self.crf), "-f", "mp4", self._partial]
        self._log = tempfile.TemporaryFile()  # a file, not a pipe: ffmpeg can never block on its own messages
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._log)
        return self

    def write(self, frames: torch.Tensor) -> None:
        if not torch.is_tensor(frames) or frames.dim() != 4 or frames.shape[-1] not in (3, 4) or \
                tuple(frames.shape[1:3]) != self.size:
            raise InputError(f"IMAGE frames [F, {self.size[0]}, {self.size[1]}, 3]",
                             f"shape {list(getattr(frames, 'shape', []))}", "connect decoded video frames of one size")
        for i in range(frames.shape[0]):  # one frame at a time: never a uint8 copy of the whole video
            if self._pipe_error is not None:
                return
            frame = (frames[i, :, :, :3].float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
            if frame.shape[:2] != self.even:
                pad = ((0, self.even[0] - frame.shape[0]), (0, self.even[1] - frame.shape[1]), (0, 0))
                frame = np.pad(frame, pad, mode="edge")
            try:
                self._proc.stdin.write(np.ascontiguousarray(frame).tobytes())
                self.frames += 1
            except (BrokenPipeError, OSError) as e:
                self._pipe_error = e

    def __exit__(self, kind, error, tb) -> None:
        if kind is not None:  # an error or a Cancel: no file under the real name
            self._proc.kill()
            self._proc.wait()
            self._log.close()
            _remove(self._partial)
            return
        try:
            self._proc.stdin.close()
        except OSError:
            pass
        code = self._proc.wait()
        self._log.seek(0)
        stderr = self._log.read().decode(errors="replace").strip()
        self._log.close()
        if code != 0 or self._pipe_error is not None or self.frames == 0 or os.path.getsize(self._partial) == 0:
            _remove(self._partial)
            why = ffmpeg_cause(stderr) or (f"ffmpeg exited with status {code}" if code else
                                           str(self._pipe_error or "no frames were written"))
            raise OutputError(f"the mp4 written to {self.out!r}", f"ffmpeg failed: {why}",
                              "check free disk space and write permission there, or choose another output folder")
        try:
            os.replace(self._partial, self.out)
        except OSError as e:
            _remove(self._partial)
            raise OutputError(f"the mp4 at {self.out!r}", f"renaming the finished file failed: {e.strerror or e}",
                              "check the folder's permissions, or choose another output path") from None
        self.path = self.out


def write_mp4(frames: torch.Tensor, path: str, fps: float = 24.0, crf: int = 19) -> str:
    """Encode frames as H.264 (yuv420p, playable everywhere); odd sides are padded by one pixel. Raises
    OutputError saying where and why when ffmpeg cannot write the file; never leaves a partial file."""
    if not torch.is_tensor(frames) or frames.dim() != 4 or frames.shape[-1] not in (3, 4) or frames.shape[0] < 1:
        raise InputError("IMAGE frames [F, H, W, 3]", f"shape {list(getattr(frames, 'shape', []))}",
                         "connect decoded video frames")
    with Mp4Writer(path, frames.shape[2], frames.shape[1], fps, crf) as writer:
        writer.write(frames)
    return writer.path
