"""HyStream: HunyuanVideo text-to-video on small GPUs, as a ComfyUI node pack.

ComfyUI imports this file and reads NODE_CLASS_MAPPINGS. Outside ComfyUI (CLI, tests, benchmarks) the
package imports without the host and the mappings are empty (the ComfyUI-GGUF pattern).
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__version__ = "0.1.0"
__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
