"""HunyuanVideo 1.5 (text-to-video and image-to-video; 480p and 720p; plain, CFG- and step-distilled)."""

from .family import HunyuanVideo15

FAMILY = HunyuanVideo15()
