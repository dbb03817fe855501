"""nodes/host.py against stand-ins of the host's modules, for what the pinned ComfyUI (0.3.64) cannot show: 0.38's
memory manager (its pinned-memory budget), a GPU device, the user's --reserve-vram, TAESD previews configured,
ComfyUI Desktop's split code / user-data folders, and an import that fails inside ComfyUI.

The memory manager's behaviour, and how the stand-ins follow ComfyUI's functions, is written out in host_standin.py.
The tests assert what a wrong hand-over breaks on that host, not numbers computed from the stand-in's inputs."""

import subprocess
import sys

import pytest

from host_standin import GIB, VERSIONS, result, run


@pytest.mark.parametrize("version", VERSIONS)
def test_make_room_frees_what_the_stage_needs_and_no_more(version):
    case = result(version)["make_room 5"]
    need, reserve, before, after = case["need"], result(version)["reserve"], case["before"], case["after"]
    assert after["free"]["cuda:0"] >= need + reserve  # the stage fits and the user's --reserve-vram stays free
    assert after["free"]["cuda:0"] <= max(before["free"]["cuda:0"], need + reserve), "unloaded more than needed"
    assert after["free"]["cuda:1"] == before["free"]["cuda:1"]  # another GPU's models are not in the way
    assert all(a >= b for a, b in zip(after["pinned"], before["pinned"])), "dropped the host's pinned copies"
    asks = [c for c in case["calls"] if c[0] == "free_memory"]
    assert asks and all(c[1] <= need + reserve and c[3] == 0 for c in asks), case["calls"]  # never pins_required
    assert ["unload_all_models"] not in case["calls"]
    fits = result(version)["make_room 1"]
    assert fits["after"] == fits["before"]  # a stage that fits in what is free unloads nothing


@pytest.mark.parametrize("version", VERSIONS)
def test_the_budget_is_what_the_host_can_hand_over(version):
    out = result(version)
    # all the host's free_memory can free on this GPU (free + its models here), less the user's reserve
    assert out["budget"] + out["reserve"] == out["most_freeable"]
    assert out["free_after_make_room"] >= out["budget"] + out["reserve"]  # a plan of the whole budget fits
    assert out["streamer_free"] == out["budget"]


@pytest.mark.parametrize("version", VERSIONS)
def test_the_budget_shrinks_by_what_the_host_holds_not_by_what_it_can_evict(version):
    budgets = result(version)["budgets"]
    base = budgets.pop("base")[0]
    shrink = {change: base - budget for change, (budget, _) in budgets.items()}
    deltas = {change: delta for change, (_, delta) in budgets.items()}
    assert shrink["more held outside its models"] == deltas["more held outside its models"]
    assert shrink["larger --reserve-vram"] == deltas["larger --reserve-vram"]
    assert shrink["another model loaded here"] == 0, shrink  # evictable: free_memory gives it back
    assert shrink["a model on the other GPU"] == 0, shrink


def test_our_pinned_ram_leaves_what_the_0_38_host_may_still_pin():
    pins = result("0.38")["pins"]
    assert pins["allowance"] - pins["allowance_after"] == pins["host_pinned"]  # it shrinks as the host pins
    assert not any(c[0] == "pins evicted" for c in pins["evicted_within"])  # the host can pin all it was left...
    assert any(c[0] == "pins evicted" for c in pins["evicted_past"])  # ...and not a MiB more without evicting
    assert pins["allowance_pinning_off"] == 0


def test_the_0_3_64_host_has_no_pinned_budget():
    assert result("0.3.64")["allowance"] == 0


def test_previews_use_latent2rgb_even_when_taesd_is_configured():
    out = result("0.38")
    assert out["TAESD"]["previewer"] == "Latent2RGBPreviewer"
    assert ["progress", 1, True] in out["TAESD"]["calls"]
    assert not any("get_previewer" in c[0] for c in out["TAESD"]["calls"])  # no preview VAE in our budget
    assert out["NoPreviews"]["previewer"] is None and ["progress", 1, False] in out["NoPreviews"]["calls"]


def test_tokenizers_and_folders_on_comfyui_desktop():
    """Desktop points base_path at the user-data folder: the bundled tokenizers are beside the code."""
    out = result("0.38")
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
