"""The host stand-in that test_host_versions.py and test_host_vram_modes.py run: stand-ins of the host's modules
(comfy.model_management, comfy.utils, latent_preview, folder_paths) and nodes/host.py imported against them, in one
fresh interpreter per host version; every scenario's figures come back as one JSON line.

The memory manager stand-in behaves as comfy/model_management.py does (0.3.64: ../shared/comfyui; 0.38: Comfy-Org/
ComfyUI): `get_free_memory` is the device's free memory (loaded weights count as used); `free_memory(required, dev)`
walks that device's loaded models, most-offloaded first, and unloads each only by what `required -
get_free_memory(dev)` still lacks (LoadedModel.model_unload: a partial unload keeps the model, a full one detaches
it, and detaching unpins its pinned copies: ModelPatcher.unpatch_model -> unpin_all_weights); `pins_required`
makes 0.38 evict pins (ensure_pin_budget); `extra_reserved_memory()` is EXTRA_RESERVED_VRAM (--reserve-vram);
`load_models_gpu` frees size * 1.1 + max(minimum_inference_memory(), reserve) first; `unload_all_models` is
free_memory(1e30) on every device; 0.38's `pin_memory` evicts other pins past MAX_PINNED_MEMORY (-1: pinning off).
`vram_state` is a VRAMState as in both versions (--lowvram: LOW_VRAM, --novram: NO_VRAM; absent on an older host)."""

import functools
import json
import os
import subprocess
import sys

STANDIN = r'''
import enum, json, sys, types
import torch

VERSION, BROKEN, GIB = sys.argv[1], sys.argv[2] == "True", 1 << 30
cuda0, cuda1 = torch.device("cuda", 0), torch.device("cuda", 1)
TOTAL, OTHER, calls = {cuda0: 16 * GIB, cuda1: 16 * GIB}, {}, []

def module(name, **attrs):
    sys.modules[name] = m = types.ModuleType(name)
    m.__dict__.update(attrs)
    return m

class Patcher:  # a ModelPatcher as the memory manager sees it
    def __init__(self, size, device, loaded, pinned=0):
        self.size, self.load_device, self.loaded, self.pinned = size, device, loaded, pinned

class LoadedModel:
    def __init__(self, patcher):
        self.model, self.device = patcher, patcher.load_device
    def is_dead(self): return False
    def model_memory(self): return self.model.size
    def model_loaded_memory(self): return self.model.loaded
    def model_offloaded_memory(self): return self.model.size - self.model.loaded
    def model_unload(self, memory_to_free=None):
        p = self.model
        if memory_to_free is not None and memory_to_free < p.loaded:  # partially_unload pins what it offloads
            p.loaded -= memory_to_free
            p.pinned += memory_to_free if pin(memory_to_free) else 0
            return False
        if hasattr(mm, "TOTAL_PINNED_MEMORY"):
            mm.TOTAL_PINNED_MEMORY -= p.pinned
        p.loaded = p.pinned = 0  # detach -> unpin_all_weights
        return True

def get_free_memory(dev=None, torch_free_too=False):
    dev = dev or cuda0
    free = TOTAL[dev] - OTHER[dev] - sum(m.model.loaded for m in mm.current_loaded_models if m.device == dev)
    return (free, 0) if torch_free_too else free

def free_memory(memory_required, device, keep_loaded=[], for_dynamic=False, pins_required=0, ram_required=0):
    calls.append(["free_memory", memory_required, str(device), pins_required])
    models, unloaded = mm.current_loaded_models, []
    for *_, i in sorted((-m.model_offloaded_memory(), m.model_memory(), i) for i, m in enumerate(models)
                        if m.device == device and m not in keep_loaded and not m.is_dead()):
        lacking = memory_required - get_free_memory(device)
        if lacking > 0 and models[i].model_unload(lacking):
            unloaded.append(i)
    if pins_required > 0 and not for_dynamic:  # ensure_pin_budget
        evict_pins(pins_required)
    return [models.pop(i) for i in sorted(unloaded, reverse=True)]

def evict_pins(n):
    calls.append(["pins evicted", n])
    for p in PATCHERS:
        take = min(p.pinned, n)
        p.pinned, n, mm.TOTAL_PINNED_MEMORY = p.pinned - take, n - take, mm.TOTAL_PINNED_MEMORY - take

def pin(n):  # pin_memory -> ensure_pin_registerable
    if getattr(mm, "MAX_PINNED_MEMORY", -1) <= 0:
        return False
    if mm.TOTAL_PINNED_MEMORY + n > mm.MAX_PINNED_MEMORY:
        evict_pins(mm.TOTAL_PINNED_MEMORY + n - mm.MAX_PINNED_MEMORY)
    mm.TOTAL_PINNED_MEMORY += n
    return True

def load_models_gpu(models, memory_required=0, **kw):
    for p in models:
        extra = max(mm.minimum_inference_memory(), memory_required + mm.EXTRA_RESERVED_VRAM)
        free_memory(p.size * 1.1 + extra, p.load_device)
        p.loaded = p.size
        PATCHERS.append(p)
        mm.current_loaded_models.insert(0, LoadedModel(p))

def unload_all_models():
    calls.append(["unload_all_models"])
    for dev in TOTAL:
        free_memory(1e30, dev)

mm = module("comfy.model_management", get_free_memory=get_free_memory, free_memory=free_memory,
            load_models_gpu=load_models_gpu, unload_all_models=unload_all_models, get_torch_device=lambda: cuda0,
            get_total_memory=lambda dev=None, torch_total_too=False: TOTAL[dev or cuda0],
            extra_reserved_memory=lambda: mm.EXTRA_RESERVED_VRAM,
            minimum_inference_memory=lambda: GIB * 0.8 + mm.EXTRA_RESERVED_VRAM,
            soft_empty_cache=lambda force=False: calls.append(["soft_empty_cache"]),
            InterruptProcessingException=type("InterruptProcessingException", (Exception,), {}),
            throw_exception_if_processing_interrupted=lambda: None)
if VERSION != "0.38":  # 0.3.64's signature: no for_dynamic, pins_required, ram_required
    mm.free_memory = lambda memory_required, device, keep_loaded=[]: free_memory(memory_required, device, keep_loaded)

def host_state():  # a text encoder partly offloaded (its offloaded part pinned) and a VAE here, a model on cuda:1
    global PATCHERS
    OTHER.update({cuda0: 4 * GIB, cuda1: 0})  # held outside models: activations, caches, other programs
    PATCHERS = [Patcher(8 * GIB, cuda0, 6 * GIB, pinned=2 * GIB), Patcher(3 * GIB, cuda0, 3 * GIB),
                Patcher(5 * GIB, cuda1, 5 * GIB, pinned=GIB)]
    mm.current_loaded_models, mm.EXTRA_RESERVED_VRAM = [LoadedModel(p) for p in PATCHERS], GIB // 2
    if VERSION == "0.38":
        mm.MAX_PINNED_MEMORY, mm.TOTAL_PINNED_MEMORY = 20 * GIB, sum(p.pinned for p in PATCHERS)

def state():
    return dict(free={str(d): get_free_memory(d) for d in TOTAL}, pinned=[p.pinned for p in PATCHERS],
                loaded=[p.loaded for p in PATCHERS])

comfy = module("comfy")
comfy.model_management = mm
comfy.utils = module("comfy.utils", ProgressBar=type("ProgressBar", (), dict(
    __init__=lambda self, total: None,
    update_absolute=lambda self, value, total=None, preview=None: calls.append(["progress", value, bool(preview)]))))
comfy.latent_formats = module("comfy.latent_formats", HunyuanVideo=type("HunyuanVideo", (), dict(
    latent_rgb_factors=[[0.1, 0.2, 0.3]] * 16, latent_rgb_factors_bias=[0.0] * 3, taesd_decoder_name="taehv")))
Method = enum.Enum("LatentPreviewMethod", "NoPreviews Auto Latent2RGB TAESD")
comfy.cli_args = module("comfy.cli_args", LatentPreviewMethod=Method, args=types.SimpleNamespace(preview_method=None))
if not BROKEN:
    module("latent_preview", get_previewer=lambda *a: calls.append(["get_previewer (would load TAESD)"]),
           Latent2RGBPreviewer=type("Latent2RGBPreviewer", (), dict(
               __init__=lambda self, factors, bias=None: None,
               decode_latent_to_preview_image=lambda self, fmt, x0: ("JPEG", None, 0))))
data, unet = "/home/user/ComfyUI-data/models/diffusion_models", "/home/user/ComfyUI-data/models/unet"
module("folder_paths", __file__="/opt/ComfyUI/folder_paths.py", base_path="/home/user/ComfyUI-data",
       models_dir="/home/user/ComfyUI-data/models", get_folder_paths=lambda f: [unet, data],
       folder_names_and_paths={"diffusion_models": ([unet, data], set())})

from hystream.nodes import host
out = dict(reserve=GIB // 2, tokenizers=host.host_tokenizer_dirs(), folder=host.models_dir("diffusion_models"))
host_state()
out.update(budget=host.available_vram(cuda0), streamer_free=host.share_device().free_bytes(),
           allowance=host.host_pinned_allowance())
free_memory(1e30, cuda0)  # everything the host can give back on this GPU
out["most_freeable"] = get_free_memory(cuda0)
host_state()
host.share_device().make_room(out["budget"])
out["free_after_make_room"] = get_free_memory(cuda0)

for need in (5 * GIB, GIB):  # more than is free: a partial unload covers it; less: nothing to unload
    host_state()
    before, start = state(), len(calls)
    host.make_room(need, cuda0)
    out[f"make_room {need // GIB}"] = dict(need=need, before=before, after=state(), calls=calls[start:])

budgets = {}
for change, delta, dev in [("base", 0, None), ("more held outside its models", 2 * GIB, None),
                           ("larger --reserve-vram", GIB, None), ("another model loaded here", 2 * GIB, cuda0),
                           ("a model on the other GPU", 2 * GIB, cuda1)]:
    host_state()
    if change == "more held outside its models":
        OTHER[cuda0] += delta
    elif change == "larger --reserve-vram":
        mm.EXTRA_RESERVED_VRAM += delta
    elif dev is not None:  # through the host's own loader, which makes room for it first
        load_models_gpu([Patcher(delta, dev, 0)])
    budgets[change] = [host.available_vram(cuda0), delta]
out["budgets"] = budgets

if VERSION == "0.38":
    host_state()
    out["pins"] = dict(allowance=host.host_pinned_allowance(), host_pinned=GIB)
    pin(GIB)  # the host pins 1 GiB more
    out["pins"]["allowance_after"] = host.host_pinned_allowance()
    start = len(calls)
    pin(out["pins"]["allowance_after"])  # the host takes all it was left...
    out["pins"]["evicted_within"], start = calls[start:], len(calls)
    pin(1 << 20)  # ...and a MiB more
    out["pins"]["evicted_past"] = calls[start:]
    mm.MAX_PINNED_MEMORY = -1  # --disable-pinned-memory, or a GPU ComfyUI does not pin for
    out["pins"]["allowance_pinning_off"] = host.host_pinned_allowance()

for method in ("TAESD", "NoPreviews"):
    comfy.cli_args.args.preview_method, start = getattr(Method, method), len(calls)
    progress = host.Progress(4, preview_format="HunyuanVideo")
    progress.update(1, 4, x0=torch.zeros(1, 16, 2, 4, 4))
    out[method] = dict(previewer=type(progress.previewer).__name__ if progress.previewer else None, calls=calls[start:])
from hystream.offload.budget import Budget
from hystream.offload.settings import StreamSettings
mm.VRAMState = enum.Enum("VRAMState", "DISABLED NO_VRAM LOW_VRAM NORMAL_VRAM HIGH_VRAM SHARED", start=0)
out["vram_modes"] = modes = {}
for mode in ("NORMAL_VRAM", "LOW_VRAM", "NO_VRAM", None):  # None: a host without vram_state
    host_state()
    if mode:
        mm.vram_state = mm.VRAMState[mode]
    elif hasattr(mm, "vram_state"):
        del mm.vram_state
    hand, plans = host.share_device(), {}
    for asked in (0, 64 * GIB):  # automatic, and a hand-set budget larger than the GPU
        plan = Budget(StreamSettings(budget_bytes=asked, prefetch=1, hand_over=hand), None, [GIB] * 16).plan(GIB, 0)
        plans[str(asked)] = dict(resident=len(plan.resident), total=plan.total_bytes, prefetch=plan.prefetch)
    modes[str(mode)] = dict(available=host.available_vram(cuda0), plans=plans)
print("RESULT " + json.dumps(out))
'''
GIB = 1 << 30
VERSIONS = ["0.38", "0.3.64"]


@functools.cache
def run(version="0.38", broken=False):
    """All of a host version's scenarios in one fresh interpreter (each costs a torch + pack import)."""
    r = subprocess.run([sys.executable, "-c", STANDIN, version, str(broken)], capture_output=True, text=True,
                       timeout=300, env=dict(os.environ, CUDA_VISIBLE_DEVICES=""), check=False)
    line = next((x for x in r.stdout.splitlines() if x.startswith("RESULT ")), None)
    return (json.loads(line[7:]) if line else None), r


def result(version):
    out, r = run(version)
    assert out, r.stderr[-3000:]
    return out

