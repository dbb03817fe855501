"""Video files in and out: H.264 mp4 writing and frame reading through imageio-ffmpeg (a static ffmpeg
binary, no system install). Frames are ComfyUI IMAGE tensors: [F, H, W, 3] float in [0, 1]."""

from __future__ import annotations

import os

import numpy as np
import torch

from .errors import InputError, NotFoundError


def write_mp4(frames: torch.Tensor, path: str, fps: float = 24.0, crf: int = 19) -> str:
    """Encode frames as H.264 (yuv420p, playable everywhere). Odd sizes are padded by one pixel."""
    import imageio_ffmpeg

    if frames.dim() != 4 or frames.shape[-1] not in (3, 4) or frames.shape[0] < 1:
        raise InputError("IMAGE frames [F, H, W, 3]", f"shape {list(frames.shape)}", "connect decoded video frames")
    if not 0 < fps <= 240:
        raise InputError("fps between 0 and 240", f"{fps}", "use 24 (HunyuanVideo's rate)")
    video = (frames[..., :3].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    pad_h, pad_w = video.shape[1] % 2, video.shape[2] % 2
    if pad_h or pad_w:  # yuv420p needs even sides
        video = np.pad(video, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    height, width = video.shape[1:3]
    writer = imageio_ffmpeg.write_frames(path, (width, height), fps=fps, codec="libx264", pix_fmt_out="yuv420p",
                                         output_params=["-crf", str(int(crf))], macro_block_size=1,
                                         ffmpeg_log_level="error")
    writer.send(None)
    try:
        for frame in video:
            writer.send(np.ascontiguousarray(frame))
    finally:
        writer.close()
    return path


def read_video(path: str, max_frames: int = 0, frame_step: int = 1) -> tuple[torch.Tensor, float]:
    """(frames [F, H, W, 3] float32 in [0, 1], fps). `max_frames` 0 = all; every `frame_step`-th frame."""
    import imageio_ffmpeg

    if not os.path.isfile(path):
        raise NotFoundError("a video file", f"nothing at {path!r}", "upload the video in the node or put it in ComfyUI/input")
    if frame_step < 1 or max_frames < 0:
        raise InputError("frame_step ≥ 1 and max_frames ≥ 0", f"frame_step {frame_step}, max_frames {max_frames}",
                         "use frame_step 1 and max_frames 0 (all frames)")
    try:
        reader = imageio_ffmpeg.read_frames(path, pix_fmt="rgb24")
        meta = reader.__next__()
    except (RuntimeError, OSError, StopIteration) as e:
        raise InputError("a video ffmpeg can read (mp4, webm, mkv, mov, gif …)", f"{os.path.basename(path)}: {e}",
                         "convert the file to mp4 (H.264)") from None
    width, height = meta["size"]
    frames = []
    try:
        for i, raw in enumerate(reader):
            if i % frame_step:
                continue
            frames.append(np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3))
            if max_frames and len(frames) >= max_frames:
                break
    finally:
        reader.close()
    if not frames:
        raise InputError("at least one video frame", f"none in {os.path.basename(path)}", "check the file plays")
    video = torch.from_numpy(np.stack(frames)).float().div_(255.0)
    return video, float(meta.get("fps") or 24.0) / frame_step
