"""HyStreamSaveVideo / HyStreamLoadVideo: mp4 out (shown in the UI), video frames in."""

from __future__ import annotations

import hashlib
import os

from ..video_io import read_video, write_mp4
from . import host


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

    def save(self, images, fps, filename_prefix, crf):
        folder, stem, counter, subfolder = host.output_target(filename_prefix, images.shape[2], images.shape[1])
        name = f"{stem}_{counter:05}_.mp4"
        write_mp4(images, os.path.join(folder, name), fps, crf)
        return {"ui": {"images": [{"filename": name, "subfolder": subfolder, "type": "output"}], "animated": (True,)}}


class HyStreamLoadVideo:
    DESCRIPTION = "Loads a video from ComfyUI's input folder (upload from the node) as frames for video-to-video."
    CATEGORY = "HyStream"
    RETURN_TYPES = ("IMAGE", "FLOAT")
    RETURN_NAMES = ("images", "fps")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "video": (host.input_videos(), {"video_upload": True, "tooltip": "A video in ComfyUI/input (mp4, webm, mkv, mov, gif)."}),
            "max_frames": ("INT", {"default": 0, "min": 0, "max": 4096,
                                   "tooltip": "Keep at most this many frames (0 = all); use 4k+1 (e.g. 61, 129)."}),
            "frame_step": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "Keep every n-th frame."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, video):
        if host.input_exists(video):
            return True
        return f"Video not found: expected {video!r} in ComfyUI's input folder. What to do: upload it in the node."

    @classmethod
    def IS_CHANGED(cls, video, **_):
        with open(host.input_path(video), "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()

    def load(self, video, max_frames, frame_step):
        frames, fps = read_video(host.input_path(video), max_frames, frame_step)
        return (frames, fps)
