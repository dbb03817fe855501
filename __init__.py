"""HyStream: HunyuanVideo text-to-video on small GPUs, as a ComfyUI node pack.

ComfyUI imports this file and reads NODE_CLASS_MAPPINGS (and WEB_DIRECTORY, the small frontend extension
that shows node reports). Outside ComfyUI (CLI, tests, benchmarks) the package imports without the host
and the mappings are empty (the ComfyUI-GGUF pattern).
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__version__ = "0.1.0"
WEB_DIRECTORY = "./web"
__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
