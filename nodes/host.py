"""The only module that imports the ComfyUI host (comfy.*, folder_paths, latent_preview, server).

Everything else in HyStream goes through this file, so the engine runs headless and the host surface
we depend on is visible in one place: model folders, the compute device, VRAM hand-over with the host's
model manager, progress bars with previews, Cancel, output and input folders.
"""

from __future__ import annotations

import os

from ..errors import OutputError
from ..loaders.tokenizer_files import bundled_tokenizer_dirs

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


def folder_description(folder: str) -> str:
    """`models/diffusion_models` and the user's real folders for it (extra_model_paths included)."""
    paths = folder_paths.get_folder_paths(folder)
    return f"models/{folder} ({', '.join(paths)})" if paths else f"models/{folder}"


def host_tokenizer_dirs() -> dict[str, str]:
    """The tokenizers ComfyUI ships beside its code: the folder of folder_paths.py, which is not
    `base_path` when ComfyUI Desktop (or --base-directory) puts the user's data elsewhere."""
    return bundled_tokenizer_dirs(os.path.dirname(os.path.abspath(folder_paths.__file__)))


def input_videos() -> list[str]:
    folder = folder_paths.get_input_directory()
    files = [f for f in os.listdir(folder) if os.path.isfile(os.path.join(folder, f))] if os.path.isdir(folder) else []
    return sorted(f for f in files if f.lower().endswith(VIDEO_EXTENSIONS))


def model_folder(path: str) -> str | None:
    """A folder inside one of ComfyUI's model folders (models/…, extra_model_paths, the input folder), as
    a real path; relative paths count from models/. None for anything else: a node never reads files
    outside ComfyUI's folders on behalf of a (possibly remote) user."""
    folders = [p for paths, _ in folder_paths.folder_names_and_paths.values() for p in paths]
    roots = {os.path.realpath(p) for p in [folder_paths.models_dir, folder_paths.get_input_directory(), *folders]}
    # a relative name counts from models/ and from every other models root (extra_model_paths' base folders)
    bases = [folder_paths.models_dir, *dict.fromkeys(os.path.dirname(p) for p in folders)]
    for base in bases:
        target = os.path.realpath(os.path.join(base, os.path.expanduser(path)))
        if os.path.isdir(target) and any(os.path.commonpath([target, r]) == r for r in roots):
            return target
    return None


def input_file(name) -> str | None:
    """The real path of an input file named as LoadImage accepts it (`clip.mp4`, `clip.mp4 [input]`,
    `[output]`, `[temp]`), or None when it does not exist or lies outside that ComfyUI folder (absolute
    paths, `../`, symlinks leading out): the server never reads other files on a user's behalf."""
    if not isinstance(name, str) or not name.strip() or "\0" in name:
        return None
    rel, base = folder_paths.annotated_filepath(name.strip())
    base = os.path.realpath(base or folder_paths.get_input_directory())
    if os.path.isabs(rel):
        return None
    path = os.path.realpath(os.path.join(base, rel))
    if os.path.commonpath([path, base]) != base or not os.path.isfile(path):
        return None
    return path


def output_target(prefix: str, width: int, height: int) -> tuple[str, str, int, str]:
    """(folder, file-name stem, counter, subfolder) for a new output, ComfyUI's numbering."""
    out_dir = folder_paths.get_output_directory()
    full = os.path.realpath(os.path.join(out_dir, os.path.dirname(os.path.normpath(prefix or "."))))
    if not isinstance(prefix, str) or os.path.isabs(prefix) or \
            os.path.commonpath([full, os.path.realpath(out_dir)]) != os.path.realpath(out_dir):
        raise OutputError("a filename_prefix inside ComfyUI's output folder (it may name a subfolder)",
                          f"{prefix!r}, which leads outside {out_dir}", "use a plain name such as HyStream or videos/HyStream")
    try:
        folder, stem, counter, subfolder, _ = folder_paths.get_save_image_path(prefix, out_dir, width, height)
        os.makedirs(folder, exist_ok=True)
    except Exception as e:  # the host refuses prefixes leading out of the output folder; full disks, permissions
        raise OutputError("a filename_prefix inside ComfyUI's output folder (it may name a subfolder)",
                          f"{prefix!r}: {e}", "use a plain name such as HyStream or videos/HyStream") from None
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


def is_interrupt(e: BaseException) -> bool:
    """The host's Cancel (it must reach ComfyUI as it is)."""
    return HOST_AVAILABLE and isinstance(e, model_management.InterruptProcessingException)


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
