import os
import sys

import pytest
import torch

# The repository root is the package; tests import it as `hystream` (installed editable by the test
# command). Fall back to a link when run from a plain checkout.
try:
    import hystream  # noqa: F401
except ImportError:  # pragma: no cover - developer convenience
    import tempfile

    link_dir = tempfile.mkdtemp(prefix="hystream-import-")
    os.symlink(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.path.join(link_dir, "hystream"))
    sys.path.insert(0, link_dir)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_dit_sd():
    from tiny_dit import tencent_state_dict

    return tencent_state_dict()


@pytest.fixture(scope="session")
def tiny_dit_reference(tiny_dit_sd):
    from tiny_dit import diffusers_model

    return diffusers_model(tiny_dit_sd)


@pytest.fixture(scope="session")
def _text_models_once(tmp_path_factory):
    from tiny_text import text_models

    models = text_models(str(tmp_path_factory.mktemp("tiny_text") / "tok"))
    return models, torch.get_rng_state()


@pytest.fixture(scope="module")
def text_models(_text_models_once):
    """The tiny tokenizers (in `tok_dir`) and reference Llama and CLIP, built once per session: tests only read
    them (they deepcopy before changing one). Each module gets the torch RNG as it was right after building them,
    so the module's later random draws (lm_head rows, VAE init…) are the ones it drew when it built its own."""
    models, rng = _text_models_once
    torch.set_rng_state(rng)
    return models


@pytest.fixture(scope="session")
def comfy_snapshot():
    """The pinned ComfyUI. CI sets HYSTREAM_REQUIRE_HOST=1, so a missing host fails there instead of skipping."""
    from comfy_host import find_comfyui

    path = find_comfyui()
    if path is None:
        reason = "no ComfyUI host: set COMFYUI_PATH or place the snapshot at ../shared/comfyui"
        if os.environ.get("HYSTREAM_REQUIRE_HOST") or os.environ.get("CI"):
            pytest.fail(reason + " (HYSTREAM_REQUIRE_HOST is set: host tests must run)")
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def comfy_host(comfy_snapshot, tmp_path_factory):
    """One real ComfyUI for the session, with the pack linked under another folder name and tiny random
    models of both families in the real layouts (tokenizers beside the text encoders) in an extra model folder."""
    from comfy_host import SWITCH_PACK, ComfyHost
    from hystream.families.hunyuan_video.demo import build_models
    from hystream.families.hunyuan_video_15.demo import build_models as build_models_15

    root = tmp_path_factory.mktemp("comfy_session")
    models = build_models(str(root / "models"))
    models15 = build_models_15(str(root / "models"))  # 1.5's files beside 1.0's, as users keep them
    folders = {k: os.path.join(models["models"], k) for k in ("diffusion_models", "text_encoders", "vae", "loras", "clip_vision")}
    host = ComfyHost(comfy_snapshot, str(root), folders, extra_nodes={"hystream_test_switch": SWITCH_PACK})
    host.models, host.models15 = models, models15
    host.start()
    yield host
    host.stop()


def pytest_configure(config):
    config.addinivalue_line("markers", "grad_mode: run outside torch.inference_mode() (the default for tests)")
    config.addinivalue_line("markers", "stream_protocol: the streamer's CUDA ordering protocol, checked with a "
                                       "simulated CUDA (or the real one under bench/gpu_check.py)")


@pytest.fixture(autouse=True)
def host_grad_mode(request):
    """ComfyUI runs every node under torch.inference_mode(); the tests that stand in for it do too, so an
    in-place write to an inference tensor outside it (e.g. on a worker thread) fails here as it would there."""
    if request.node.get_closest_marker("grad_mode"):
        yield
        return
    with torch.inference_mode():
        yield
