"""The only module that imports the ComfyUI host (comfy.*, folder_paths, latent_preview).

Everything else in HyStream goes through this file, so the engine runs headless and the host surface
we depend on is visible in one place: model folders, the compute device, memory hand-over with the
host's model manager, progress bars with previews, Cancel, output and input folders.

Versions: tested in ComfyUI 0.3.64; the 0.38 memory manager's additions (Dynamic VRAM's evictable weights,
the host's own pinned-memory budget) are used only where present (`getattr`), so one file serves both.
"""

from __future__ import annotations

import os
import sys

from ..errors import OutputError
from ..families.registry import bundled_tokenizer_dirs
from ..offload.settings import HostHandOver

try:  # inside ComfyUI
    import comfy.latent_formats
    import comfy.utils
    import folder_paths
    import latent_preview
    from comfy import model_management

    HOST_AVAILABLE = True
except ImportError:
    if "folder_paths" in sys.modules or "comfy.model_management" in sys.modules:
        # inside ComfyUI after all: fail loudly, so the user sees "IMPORT FAILED" with the cause instead
        # of a pack that silently registers no nodes
        raise
    model_management = folder_paths = latent_preview = None  # CLI, tests, benchmarks
    HOST_AVAILABLE = False

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".mov", ".avi", ".gif", ".m4v")


# -- files -----------------------------------------------------------------------------------------
def model_files(*folders: str, also: tuple[str, ...] = ()) -> list[str]:
    """The files ComfyUI lists for `folders`, plus those ending in `also` (".gguf"), which the host's
    folders do not list. They are searched here rather than registered as a host folder, so native
    loaders never offer a file they cannot read."""
    names: list[str] = []
    for folder in folders:
        if folder in folder_paths.folder_names_and_paths:
            names += [n for n in folder_paths.get_filename_list(folder) if n not in names]
            if also:
                for base in folder_paths.get_folder_paths(folder):
                    files, _ = folder_paths.recursive_search(base, excluded_dir_names=[".git"])
                    names += [n for n in folder_paths.filter_files_extensions(files, also) if n not in names]
    return sorted(names)


def model_path(folder: str, name: str) -> str | None:
    return folder_paths.get_full_path(folder, name)


def model_folders(folder: str) -> list[str]:
    """The user's real folders for `folder`, the one named like it first (models/diffusion_models, not the
    legacy models/unet that ComfyUI lists first), extra_model_paths included."""
    paths = list(folder_paths.get_folder_paths(folder))
    return sorted(paths, key=lambda p: os.path.basename(os.path.normpath(p)) != folder)


def models_dir(folder: str) -> str:
    return model_folders(folder)[0]


def folder_description(folder: str) -> str:
    """`models/diffusion_models` and the user's real folders for it."""
    paths = model_folders(folder)
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
    except Exception as e:  # noqa: BLE001 - the host refuses a prefix with a bare Exception; full disks, permissions
        raise OutputError("a filename_prefix inside ComfyUI's output folder (it may name a subfolder)",
                          f"{prefix!r}: {e}", "use a plain name such as HyStream or videos/HyStream") from None
    return folder, stem, counter, subfolder


# -- device and memory -----------------------------------------------------------------------------
def device():
    return model_management.get_torch_device()


def reserved_vram() -> int:
    """What the user keeps free of the GPU for others (--reserve-vram; both versions have it)."""
    fn = getattr(model_management, "extra_reserved_memory", None)
    return int(fn()) if fn else 0


def evictable_vram(dev) -> int:
    """VRAM held by the host's loaded models that free_memory can take back (with 0.38's Dynamic VRAM,
    weights it evicts on demand, which mem_get_info counts as used)."""
    total = 0
    for loaded in getattr(model_management, "current_loaded_models", []):
        try:
            if loaded.device == dev and not loaded.is_dead():
                total += int(loaded.model_loaded_memory())
        except Exception:  # noqa: BLE001, S112 - a host's or another pack's entry we cannot size: not counted
            continue
    return total


def available_vram(dev) -> int | None:
    """Free + evictable − the user's reserve: what a HyStream stage may plan with (None on the CPU)."""
    if getattr(dev, "type", "cpu") == "cpu":
        return None
    return max(0, int(model_management.get_free_memory(dev)) + evictable_vram(dev) - reserved_vram())


def make_room(bytes_needed: int, dev=None) -> None:
    """Ask the host to free `bytes_needed` on the device (unloading only what that takes, as its own
    loaders do) instead of unloading everything (on 0.38 that also drops its pinned copies)."""
    dev = dev or device()
    if getattr(dev, "type", "cpu") == "cpu":
        return
    model_management.free_memory(int(bytes_needed) + reserved_vram(), dev)
    model_management.soft_empty_cache()


def vram_mode() -> str:
    """The user's --lowvram / --novram / --highvram choice as the host's memory manager holds it
    (model_management.vram_state, a VRAMState in both versions): NORMAL_VRAM where it says nothing."""
    return getattr(getattr(model_management, "vram_state", None), "name", "NORMAL_VRAM")


def share_device() -> HostHandOver | None:
    """What a streamer plans its automatic budget with: the host's view of the GPU (free + what it can
    evict − the user's reserve), the host freeing what a plan needs right before we allocate it, and its
    user's flags: --novram keeps no block resident (the host itself loads no weights then), --lowvram and
    --novram cap a hand-set budget at what the host can hand over. None on the CPU (nothing to share)."""
    dev = device()
    if getattr(dev, "type", "cpu") == "cpu":
        return None
    mode = vram_mode()
    return HostHandOver(free_bytes=lambda: available_vram(dev), make_room=lambda n: make_room(n, dev),
                        keep_resident=mode != "NO_VRAM", cap_budget=mode in ("LOW_VRAM", "NO_VRAM"))


def host_pinned_allowance() -> int:
    """RAM the host may still page-lock for its own models (0.38 pins up to a share of RAM): ours must
    leave it, or the two pools fight over the same memory. 0 where the host does not pin."""
    limit = getattr(model_management, "MAX_PINNED_MEMORY", None)
    used = getattr(model_management, "TOTAL_PINNED_MEMORY", 0) or 0
    if not isinstance(limit, (int, float)) or limit <= 0:
        return 0
    return max(0, int(limit) - int(used))


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
    """A node's progress bar; `update(..., x0=latents)` adds a preview frame when previews are on.

    Previews of HyStream's sampler always use Latent2RGB (a fixed latent → RGB projection, no model): the host's
    TAESD/taehv option would load a second VAE onto the GPU inside the sampling stage's memory budget."""

    def __init__(self, total: int, preview_format: str = ""):
        """preview_format: the host's latent format class of the latents previewed ("" = no previews)."""
        self.bar = comfy.utils.ProgressBar(total)
        self.previewer = latent_rgb_previewer(preview_format) if preview_format else None

    def update(self, value: int, total: int | None = None, x0=None) -> None:
        preview = None
        if self.previewer is not None and x0 is not None:
            preview = self.previewer.decode_latent_to_preview_image("JPEG", x0)
        self.bar.update_absolute(value, total, preview)


def latent_rgb_previewer(format_name: str):
    """Latent2RGB for the host's latent format `format_name` (a model family's), or None when the user turned
    previews off or this host has no such format (an older ComfyUI than the model)."""
    try:
        from comfy.cli_args import LatentPreviewMethod, args
        if args.preview_method == LatentPreviewMethod.NoPreviews:
            return None
    except (ImportError, AttributeError):
        pass
    fmt_class = getattr(comfy.latent_formats, format_name, None) if format_name else None
    if fmt_class is None:
        return None
    fmt = fmt_class()
    return latent_preview.Latent2RGBPreviewer(fmt.latent_rgb_factors, getattr(fmt, "latent_rgb_factors_bias", None))
