"""Bad files and bad inputs through the real ComfyUI API, as users and automation clients send them. Every
case must end in a refusal at queue time or an error of HyStream's family (what was expected, what was
found, what to do) — never a generic traceback and never a silent success — and the server keeps serving:
a good run works right after each one."""

import glob
import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from comfy_host import outcome, run_prompt, upload
from hystream.families.hunyuan_video.demo import TINY_DIT, random_dit_state_dict
from test_host_api import workflow
from test_lora import kohya_flux_lora
from tiny_dit import quantise_scaled_fp8

SMALL = {"EmptyHunyuanLatentVideo": {"width": 64, "height": 48, "length": 5}, "HyStreamSampler": {"steps": 2}}


def small(wf):
    for n in wf.values():
        n["inputs"].update(SMALL.get(n["class_type"], {}))
    return wf


def safetensors_bytes(tensors: dict, path) -> bytes:
    save_file(tensors, str(path))
    return path.read_bytes()


class Malicious:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.fixture(scope="module")
def bad_files(comfy_host, tmp_path_factory):
    """Broken and foreign files in the host's model folders, under names users might have."""
    models = comfy_host.models["models"]
    tmp = tmp_path_factory.mktemp("bad")
    dit_sd = {"model.diffusion_model." + k: v for k, v in random_dit_state_dict(TINY_DIT).items()}
    good_dit = safetensors_bytes(dit_sd, tmp / "dit.safetensors")
    nan = dict(dit_sd)
    key = "model.diffusion_model.single_blocks.1.linear2.weight"
    nan[key] = torch.full_like(nan[key], float("nan"))
    scaled, _ = quantise_scaled_fp8(random_dit_state_dict(TINY_DIT))
    no_scales = {k: v for k, v in scaled.items() if not k.endswith("scale_weight")}
    header = json.dumps({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    odd = json.dumps({"a": {"dtype": "F8_E8M0", "shape": [16], "data_offsets": [0, 16]}}).encode()
    files = {
        "diffusion_models": {
            "empty.safetensors": b"",
            "random_bytes.safetensors": os.urandom(4096),
            "truncated_dit.safetensors": good_dit[: len(good_dit) // 2],
            "garbage_header.safetensors": len(header).to_bytes(8, "little") + b"{not json" + header[9:] + b"\0" * 16,
            "odd_dtype.safetensors": len(odd).to_bytes(8, "little") + odd + b"\0" * 16,
            "hunyuan_video_vae_copy.safetensors": Path(comfy_host.models["vae"]).read_bytes(),
            "lora_as_dit.safetensors": Path(comfy_host.models["lora"]).read_bytes(),
            "half_a_dit.safetensors": safetensors_bytes({k: v for k, v in dit_sd.items() if "single_blocks" not in k},
                                                        tmp / "half.safetensors"),
            "flux1-dev.safetensors": safetensors_bytes({"double_blocks.0.img_attn.qkv.weight": torch.zeros(8, 4),
                                                        "double_blocks.0.img_attn.norm.query_norm.scale": torch.zeros(4)},
                                                       tmp / "flux.safetensors"),
            "hunyuan_fp8_scaled_no_scales.safetensors": safetensors_bytes(
                {"model.diffusion_model." + k if k != "scaled_fp8" else k: v for k, v in no_scales.items()}, tmp / "ns.safetensors"),
            "hunyuan_nan.safetensors": safetensors_bytes(nan, tmp / "nan.safetensors"),
            "mp_rank_00_model_states_evil.pt": pickle.dumps(Malicious()),
            "hunyuan-video-t2v-720p-Q4_K_M.gguf": b"GGUF" + os.urandom(64),
        },
        "text_encoders": {"dit_as_llm.safetensors": good_dit},
        "vae": {"dit_as_vae.safetensors": good_dit,
                "truncated_vae.safetensors": Path(comfy_host.models["vae"]).read_bytes()[:5000]},
        "loras": {"flux_style_lora.safetensors": safetensors_bytes(kohya_flux_lora(TINY_DIT.hidden, TINY_DIT.mlp_hidden, doubles=2, singles=2),
                                                                   tmp / "flux_lora.safetensors"),
                  "wrong_width_lora.safetensors": safetensors_bytes(
                      {"diffusion_model.double_blocks.0.img_attn_proj.lora_down.weight": torch.zeros(4, 3072),
                       "diffusion_model.double_blocks.0.img_attn_proj.lora_up.weight": torch.zeros(3072, 4)}, tmp / "w.safetensors"),
                  "dit_as_lora.safetensors": good_dit},
    }
    for folder, items in files.items():
        for name, data in items.items():
            with open(os.path.join(models, folder, name), "wb") as f:
                f.write(data)
    bad_tok = os.path.join(models, "text_encoders", "broken_tokenizer")
    os.makedirs(bad_tok, exist_ok=True)
    for name, text in (("tokenizer.json", "{ this is not json"), ("vocab.json", "[]"), ("merges.txt", "")):
        with open(os.path.join(bad_tok, name), "w") as f:
            f.write(text)
    (tmp / "notes.mp4").write_text("this is a text file, not a video")
    upload(comfy_host, str(tmp / "notes.mp4"), "notes.mp4")
    (tmp / "zero.mp4").write_bytes(b"")
    upload(comfy_host, str(tmp / "zero.mp4"), "zero.mp4")
    return files


T2V, LORA, V2V = "hunyuan_t2v_lowvram", "hunyuan_t2v_lora_lowvram", "hunyuan_v2v_lowvram"
CASES = {
    # bad and foreign model files
    **{f"dit:{name}": (T2V, {"1.dit_name": name}) for name in (
        "empty.safetensors", "random_bytes.safetensors", "truncated_dit.safetensors", "garbage_header.safetensors",
        "odd_dtype.safetensors", "hunyuan_video_vae_copy.safetensors", "lora_as_dit.safetensors",
        "half_a_dit.safetensors", "flux1-dev.safetensors", "hunyuan_fp8_scaled_no_scales.safetensors",
        "hunyuan_nan.safetensors", "mp_rank_00_model_states_evil.pt", "hunyuan-video-t2v-720p-Q4_K_M.gguf",
        "not_there.safetensors")},
    "llm:dit file": (T2V, {"2.llm_name": "dit_as_llm.safetensors"}),
    "llm:clip file": (T2V, {"2.llm_name": "clip_l.safetensors"}),
    "clip:llava file": (T2V, {"2.clip_name": "llava_llama3_fp8_scaled.safetensors"}),
    "clip:missing": (T2V, {"2.clip_name": "clip_g.safetensors"}),
    "tokenizer_dir:outside (absolute)": (T2V, {"2.tokenizer_dir": "/etc"}),
    "tokenizer_dir:outside (../)": (T2V, {"2.tokenizer_dir": "../../../../../../etc"}),
    "tokenizer_dir:missing": (T2V, {"2.tokenizer_dir": "text_encoders/nothing_here"}),
    "tokenizer_dir:broken files": (T2V, {"2.tokenizer_dir": "text_encoders/broken_tokenizer"}),
    "vae:dit file": (T2V, {"3.vae_name": "dit_as_vae.safetensors"}),
    "vae:truncated": (T2V, {"3.vae_name": "truncated_vae.safetensors"}),
    "lora:flux": (LORA, {"9.lora_name": "flux_style_lora.safetensors"}),
    "lora:wrong width": (LORA, {"9.lora_name": "wrong_width_lora.safetensors"}),
    "lora:a whole dit": (LORA, {"9.lora_name": "dit_as_lora.safetensors"}),
    "lora:strength nan": (LORA, {"9.strength": float("nan")}),
    # videos and paths
    "video:../ traversal": (V2V, {"10.video": "../../../../../../etc/hostname"}),
    "video:absolute path": (V2V, {"10.video": "/etc/hostname"}),
    "video:output annotation traversal": (V2V, {"10.video": "../../../etc/hostname [output]"}),
    "video:text file": (V2V, {"10.video": "notes.mp4"}),
    "video:empty file": (V2V, {"10.video": "zero.mp4"}),
    "save:prefix leaving the output folder": (T2V, {"8.filename_prefix": "../../../../tmp/escape"}),
    # inputs
    "prompt:empty": (T2V, {"4.prompt": "   "}),
    "size:not a multiple of 16": (T2V, {"5.width": 72}),
    "cfg without negative": (T2V, {"6.cfg": 5.0}),
    "steps:zero": (T2V, {"6.steps": 0}),
    "denoise:above 1": (T2V, {"6.denoise": 1.5}),
}


def graph(case: str) -> dict:
    name, overrides = CASES[case]
    wf = small(workflow(name))
    for path, value in overrides.items():
        node, key = path.split(".")
        wf[node]["inputs"][key] = value
    return wf


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_refused_or_ours(comfy_host, bad_files, case):
    result = run_prompt(comfy_host, graph(case), timeout=600)
    got = outcome(result)
    assert got.startswith(("refused", "ours")), f"{case}: {got}"
    assert comfy_host.get("/system_stats")  # still serving


def test_image_latent_and_other_foreign_inputs(comfy_host):
    """A latent of another model (4 channels from EmptyLatentImage) is refused by our sampler."""
    wf = small(workflow(T2V))
    wf["5"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    got = outcome(run_prompt(comfy_host, wf))
    assert got.startswith("ours") and "16" in got, got


ESCAPE = "save:prefix leaving the output folder"


def files_under(*roots: str) -> set[str]:
    return {os.path.join(d, f) for root in roots for d, _, names in os.walk(root) for f in names}


def escape_target(host) -> str:
    """Where the escaping prefix points from the host's output folder: four folders up from output/ is
    inside pytest's temp tree (not /tmp), so that is where an escaped video would land."""
    return os.path.normpath(os.path.join(host.root, "output", CASES[ESCAPE][1]["8.filename_prefix"]))


def test_a_prefix_leaving_the_output_folder_writes_nothing_outside_it(comfy_host):
    output = os.path.join(comfy_host.root, "output") + os.sep
    target = escape_target(comfy_host)
    watched = (os.path.dirname(comfy_host.root), os.path.dirname(target))  # the host's temp root, the target's folder
    before = files_under(*watched)
    got = outcome(run_prompt(comfy_host, graph(ESCAPE)))
    new = files_under(*watched) - before
    assert not [p for p in new if not p.startswith(output)], sorted(new)
    assert not glob.glob(glob.escape(target) + "*"), glob.glob(glob.escape(target) + "*")
    assert got.startswith("ours") and "outside" in got, got


def test_a_good_run_after_all_of_them(comfy_host, bad_files):
    before = files_under(comfy_host.root)
    result = run_prompt(comfy_host, small(workflow(T2V)))
    assert outcome(result) == "ok"
    saved = result["history"]["outputs"]["8"]["images"][0]
    # the video lands in the output folder the escape check computes its target from
    assert os.path.join(comfy_host.root, "output", saved["subfolder"], saved["filename"]) in files_under(comfy_host.root) - before
    assert "pwned" not in comfy_host.log()
    # the parametrized escape case (run earlier in this module) wrote nothing where its prefix points
    assert not glob.glob(glob.escape(escape_target(comfy_host)) + "*")
