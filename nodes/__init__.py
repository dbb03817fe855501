"""Thin ComfyUI node classes, one file per stage (filled by the node issue)."""

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
