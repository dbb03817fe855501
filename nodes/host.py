"""The only module that imports the ComfyUI host (comfy.*, folder_paths, latent_preview, server).

Everything else in HyStream goes through this file, so the engine runs headless and the host surface
we depend on is visible in one place: model folders, the compute device, VRAM hand-over with the host's
model manager, progress bars with previews, Cancel, output and input folders.
"""

from __future__ import annotations

import os

try:  # inside ComfyUI
    import comfy.latent_formats
    import comfy.model_management as model_management
    import comfy.utils
    import folder_paths
    import latent_preview

    HOST_AVAILABLE = True
except ImportError:  # CLI, tests, benchmarks
    model_management = folder_paths = latent_preview = None
    HOST_AVAILABLE = False

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".mov", ".avi", ".gif", ".m4v")


# -- files -----------------------------------------------------------------------------------------
def model_files(*folders: str) -> list[str]:
    names: list[str] = []
    for folder in folders:
        if folder in folder_paths.folder_names_and_paths:
            names += [n for n in folder_paths.get_filename_list(folder) if n not in names]
    return sorted(names)


def model_path(folder: str, name: str) -> str | None:
    return folder_paths.get_full_path(folder, name)


def models_dir(folder: str) -> str:
    return folder_paths.get_folder_paths(folder)[0]


def host_tokenizer_dirs() -> dict[str, str]:
    """The tokenizers ComfyUI ships (comfy is a namespace package: use base_path, not comfy.__file__)."""
    base = folder_paths.base_path
    return {"llama": os.path.join(base, "comfy", "text_encoders", "llama_tokenizer"),
            "clip": os.path.join(base, "comfy", "sd1_tokenizer")}


def input_videos() -> list[str]:
    folder = folder_paths.get_input_directory()
    files = [f for f in os.listdir(folder) if os.path.isfile(os.path.join(folder, f))] if os.path.isdir(folder) else []
    return sorted(f for f in files if f.lower().endswith(VIDEO_EXTENSIONS))


def input_path(name: str) -> str:
    return folder_paths.get_annotated_filepath(name)


def input_exists(name: str) -> bool:
    return folder_paths.exists_annotated_filepath(name)


def output_target(prefix: str, width: int, height: int) -> tuple[str, str, int, str]:
    """(folder, file-name stem, counter, subfolder) for a new output, ComfyUI's numbering."""
    out_dir = folder_paths.get_output_directory()
    folder, stem, counter, subfolder, _ = folder_paths.get_save_image_path(prefix, out_dir, width, height)
    return folder, stem, counter, subfolder


# -- device and memory -----------------------------------------------------------------------------
def device():
    return model_management.get_torch_device()


def free_vram_for_stage() -> None:
    """Ask the host to unload what it holds before a heavy HyStream stage."""
    model_management.unload_all_models()
    model_management.soft_empty_cache()


def empty_cache() -> None:
    model_management.soft_empty_cache()


def interrupt_check() -> None:
    """Raises ComfyUI's InterruptProcessingException when the user pressed Cancel."""
    model_management.throw_exception_if_processing_interrupted()


# -- progress --------------------------------------------------------------------------------------
class Progress:
    """A node's progress bar; `preview(x0)` adds a Latent2RGB frame (the user's preview setting rules)."""

    def __init__(self, total: int, with_previews: bool = False):
        self.bar = comfy.utils.ProgressBar(total)
        self.previewer = None
        if with_previews:
            self.previewer = latent_preview.get_previewer(device(), comfy.latent_formats.HunyuanVideo())

    def update(self, value: int, total: int | None = None, x0=None) -> None:
        preview = None
        if self.previewer is not None and x0 is not None:
            preview = self.previewer.decode_latent_to_preview_image("JPEG", x0)
        self.bar.update_absolute(value, total, preview)
