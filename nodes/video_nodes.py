"""HyStreamSaveVideo / HyStreamLoadVideo: mp4 out (shown in the UI), video frames in."""

from __future__ import annotations

import hashlib
import os

import torch

from ..errors import InputError, NotFoundError
from ..video_io import read_video, write_mp4
from . import host
from .guard import node_errors


class HyStreamSaveVideo:
    DESCRIPTION = "Saves the frames as an H.264 mp4 in ComfyUI's output folder and shows it in the node."
    CATEGORY = "HyStream"
    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE", {"tooltip": "Video frames (HyStreamVAEDecode's output)."}),
            "fps": ("FLOAT", {"default": 24.0, "min": 1.0, "max": 120.0, "step": 1.0,
                              "tooltip": "Frames per second (HunyuanVideo is trained at 24)."}),
            "filename_prefix": ("STRING", {"default": "HyStream", "tooltip": "File name prefix; may contain a subfolder."}),
            "crf": ("INT", {"default": 19, "min": 0, "max": 51, "tooltip": "H.264 quality: lower is better and bigger (19 ≈ visually lossless)."}),
        }}

    @node_errors("saving the video")
    def save(self, images, fps, filename_prefix, crf):
        if not torch.is_tensor(images) or images.dim() != 4:
            raise InputError("IMAGE frames [F, H, W, 3]", f"{getattr(images, 'shape', type(images).__name__)}",
                             "connect HyStreamVAEDecode's output")
        folder, stem, counter, subfolder = host.output_target(filename_prefix, images.shape[2], images.shape[1])
        name = f"{stem}_{counter:05}_.mp4"
        write_mp4(images, os.path.join(folder, name), fps, crf)
        return {"ui": {"images": [{"filename": name, "subfolder": subfolder, "type": "output"}], "animated": (True,)}}


def video_path(video) -> str:
    """The input video's real path, or our error (run time: linked inputs skip VALIDATE_INPUTS)."""
    path = host.input_file(video)
    if path is None:
        raise NotFoundError("a video in ComfyUI's input folder (a name from the list, as LoadImage accepts it)",
                            f"{video!r}, which is not a file there", VIDEO_FIX)
    return path


VIDEO_FIX = "upload the video in the node (or copy it into ComfyUI/input) and pick it from the list"
DEFAULT_MAX_FRAMES = 129  # HunyuanVideo's longest clip: a bounded default, never "the whole film"


class HyStreamLoadVideo:
    DESCRIPTION = ("Loads a video from ComfyUI's input folder (upload from the node) as frames for video-to-video. "
                   "Only files in the input folder are read; the decoded size is checked against free RAM first.")
    CATEGORY = "HyStream"
    RETURN_TYPES = ("IMAGE", "FLOAT")
    RETURN_NAMES = ("images", "fps")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "video": (host.input_videos(), {"video_upload": True, "tooltip": "A video in ComfyUI/input (mp4, webm, mkv, mov, gif)."}),
            "max_frames": ("INT", {"default": DEFAULT_MAX_FRAMES, "min": 0, "max": 4096,
                                   "tooltip": "Keep at most this many frames (0 = all, checked against free RAM); "
                                              "use 4k+1 (e.g. 61, 129)."}),
            "frame_step": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "Keep every n-th frame."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, video):
        if video is None or host.input_file(video) is not None:  # None: linked from another node, checked at run time
            return True
        return f"Video not found: expected {video!r} in ComfyUI's input folder. What to do: {VIDEO_FIX}."

    @classmethod
    def IS_CHANGED(cls, video, **_):
        path = host.input_file(video)
        if path is None:
            return float("nan")  # never cached: load() reports the problem
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):  # in chunks: never the whole file in memory
                digest.update(block)
        return digest.hexdigest()

    @node_errors("loading the video")
    def load(self, video, max_frames, frame_step):
        frames, fps = read_video(video_path(video), max_frames, frame_step)
        return (frames, fps)
