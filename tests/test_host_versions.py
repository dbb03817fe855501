"""nodes/host.py against stand-ins of the host's modules, for what the pinned ComfyUI (0.3.64) cannot show:
0.38's memory manager (evictable Dynamic VRAM weights, its own pinned-memory budget), a GPU device, the
user's --reserve-vram, TAESD previews configured, ComfyUI Desktop's split code / user-data folders, and an
import that fails inside ComfyUI. Each case runs in a fresh interpreter with the stand-ins in sys.modules."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

STANDIN = textwrap.dedent('''
    import enum, json, sys, types
    import torch

    VERSION = {version!r}
    GIB = 1 << 30
    calls = []

    def module(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        sys.modules[name] = m
        return m

    class Loaded:
        def __init__(self, size, device):
            self.size, self.device = size, device
        def is_dead(self):
            return False
        def model_loaded_memory(self):
            return self.size

    cuda0, cuda1 = torch.device("cuda", 0), torch.device("cuda", 1)
    mm = dict(
        current_loaded_models=[Loaded(3 * GIB, cuda0), Loaded(5 * GIB, cuda1)],
        get_free_memory=lambda dev=None, torch_free_too=False: 2 * GIB,
        extra_reserved_memory=lambda: GIB // 2,
        free_memory=lambda need, dev, keep_loaded=[]: calls.append(["free_memory", need, str(dev)]),
        soft_empty_cache=lambda force=False: calls.append(["soft_empty_cache"]),
        unload_all_models=lambda: calls.append(["unload_all_models"]),
        get_torch_device=lambda: cuda0,
        InterruptProcessingException=type("InterruptProcessingException", (Exception,), {{}}),
        throw_exception_if_processing_interrupted=lambda: None,
    )
    if VERSION == "0.38":
        mm.update(MAX_PINNED_MEMORY=20 * GIB, TOTAL_PINNED_MEMORY=6 * GIB)
    comfy = module("comfy")
    comfy.model_management = module("comfy.model_management", **mm)

    class ProgressBar:
        def __init__(self, total):
            self.total = total
        def update_absolute(self, value, total=None, preview=None):
            calls.append(["progress", value, preview is not None])
    comfy.utils = module("comfy.utils", ProgressBar=ProgressBar)

    class HunyuanVideo:
        latent_rgb_factors = [[0.1, 0.2, 0.3]] * 16
        latent_rgb_factors_bias = [0.0, 0.0, 0.0]
        taesd_decoder_name = "taehv"
    comfy.latent_formats = module("comfy.latent_formats", HunyuanVideo=HunyuanVideo)
    Method = enum.Enum("LatentPreviewMethod", "NoPreviews Auto Latent2RGB TAESD")
    comfy.cli_args = module("comfy.cli_args", LatentPreviewMethod=Method,
                            args=types.SimpleNamespace(preview_method=getattr(Method, {preview!r})))

    class Latent2RGBPreviewer:
        def __init__(self, factors, bias=None):
            self.factors = factors
        def decode_latent_to_preview_image(self, fmt, x0):
            return ("JPEG", None, 0)
    if not {broken!r}:
        module("latent_preview", Latent2RGBPreviewer=Latent2RGBPreviewer,
               get_previewer=lambda *a: calls.append(["get_previewer (would load TAESD)"]))
    module("folder_paths", __file__="/opt/ComfyUI/folder_paths.py", base_path="/home/user/ComfyUI-data",
           models_dir="/home/user/ComfyUI-data/models",
           folder_names_and_paths={{"diffusion_models": (["/home/user/ComfyUI-data/models/unet",
                                                        "/home/user/ComfyUI-data/models/diffusion_models"], set())}},
           get_folder_paths=lambda f: ["/home/user/ComfyUI-data/models/unet", "/home/user/ComfyUI-data/models/diffusion_models"])

    from hystream.nodes import host
    out = dict(available=host.available_vram(cuda0), allowance=host.host_pinned_allowance(),
               tokenizers=host.host_tokenizer_dirs(), folder=host.models_dir("diffusion_models"))
    host.make_room(GIB, cuda0)
    progress = host.Progress(4, preview_format="HunyuanVideo")
    progress.update(1, 4, x0=torch.zeros(1, 16, 2, 4, 4))
    out["previewer"] = type(progress.previewer).__name__ if progress.previewer else None

    out["streamer_free"] = host.share_device().free_bytes()
    out["calls"] = calls
    print("RESULT " + json.dumps(out))
''')


def run(version="0.38", preview="TAESD", broken=False):
    code = STANDIN.format(version=version, preview=preview, broken=broken)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, CUDA_VISIBLE_DEVICES=""), check=False)
    line = next((x for x in r.stdout.splitlines() if x.startswith("RESULT ")), None)
    return (json.loads(line[7:]) if line else None), r


GIB = 1 << 30


def test_the_0_38_memory_manager():
    out, r = run("0.38")
    assert out, r.stderr[-2000:]
    # free (2) + what the host can evict on this GPU (3; the 5 on cuda:1 do not count) − the reserve (0.5)
    assert out["available"] == int(4.5 * GIB) and out["streamer_free"] == out["available"]
    assert out["allowance"] == 14 * GIB  # the host may still lock 20 − 6 GiB for its own models
    calls = out["calls"]
    assert ["free_memory", GIB + GIB // 2, "cuda:0"] in calls  # what the stage needs, plus the reserve
    assert ["unload_all_models"] not in calls  # never everything (0.38 would drop its pinned copies too)


def test_previews_use_latent2rgb_even_when_taesd_is_configured():
    out, r = run("0.38", preview="TAESD")
    assert out["previewer"] == "Latent2RGBPreviewer", r.stderr[-2000:]
    assert not any("get_previewer" in c[0] for c in out["calls"])  # no preview VAE loaded in our budget
    assert ["progress", 1, True] in out["calls"]
    off, _ = run("0.38", preview="NoPreviews")
    assert off["previewer"] is None and ["progress", 1, False] in off["calls"]


def test_the_0_3_64_host_without_a_pinned_budget():
    out, r = run("0.3.64")
    assert out, r.stderr[-2000:]
    assert out["allowance"] == 0 and out["available"] == int(4.5 * GIB)


def test_tokenizers_and_folders_on_comfyui_desktop():
    """Desktop points base_path at the user-data folder: the bundled tokenizers are beside the code."""
    out, _ = run("0.38")
    assert out["tokenizers"]["llama"] == "/opt/ComfyUI/comfy/text_encoders/llama_tokenizer"
    assert out["tokenizers"]["clip"] == "/opt/ComfyUI/comfy/sd1_tokenizer"
    assert out["folder"].endswith("models/diffusion_models")  # not the legacy unet folder ComfyUI lists first


def test_a_failed_host_import_inside_comfyui_is_loud():
    """Inside ComfyUI a missing host module must surface as ComfyUI's IMPORT FAILED, with the cause, not as a
    pack that silently registers no nodes."""
    out, r = run("0.38", broken=True)
    assert out is None and r.returncode != 0
    assert "ModuleNotFoundError" in r.stderr and "latent_preview" in r.stderr, r.stderr[-2000:]


def test_outside_comfyui_the_pack_imports_without_the_host():
    r = subprocess.run([sys.executable, "-c", "import hystream.nodes.host as h; print(h.HOST_AVAILABLE)"],
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.stdout.strip() == "False", r.stderr


@pytest.mark.parametrize("ram, expected", [(64 * GIB, "pinned"), (24 * GIB, "mapped")])
def test_the_tier_leaves_the_hosts_pinned_allowance(monkeypatch, ram, expected):
    """A 12 GiB DiT with 64 GiB free pins; with 24 GiB free and the host entitled to lock 14 of them, it
    must stream from the file instead of competing for the same RAM."""
    from hystream.offload import host_store

    monkeypatch.setattr(host_store, "available_ram_bytes", lambda: ram)
    assert host_store.auto_host_tier(12 * GIB) == "pinned"  # alone on the machine, both would pin
    assert host_store.auto_host_tier(12 * GIB, reserve=14 * GIB) == expected
