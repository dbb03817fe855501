"""The only module that imports the ComfyUI host (comfy.*, folder_paths, latent_preview, server).

Everything else in HyStream goes through this file, so the engine runs headless and the host API
surface we depend on is visible in one place.
"""

try:  # inside ComfyUI
    import comfy.model_management as model_management  # noqa: F401
    import folder_paths  # noqa: F401

    HOST_AVAILABLE = True
except ImportError:  # CLI, tests, benchmarks
    model_management = None
    folder_paths = None
    HOST_AVAILABLE = False
