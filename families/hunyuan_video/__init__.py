"""HunyuanVideo 1.0 (text-to-video, HunyuanVideo-I2V, SkyReels-I2V): the first family."""

from .family import HunyuanVideo

FAMILY = HunyuanVideo()
