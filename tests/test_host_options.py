"""Every option of every HyStream node, run through the real ComfyUI the way users pick them: each value of
each combo input (weight dtypes, every model file in the lists — every DiT layout and precision, both
LLaVA files, both VAE layouts, LoRAs in every key format, the input videos), and every number input at
its minimum, its default and its maximum (0 = auto included). Each run must succeed, or end in a queue-time
refusal or an error of HyStream's family; the ones a user expects to work must succeed, and the options
below must take effect, as the nodes report it: the sampler's log line (dtype of the streamed block weights,
ring slots = prefetch + 1, steps, step cache method), the VAE nodes' progress (one step per tile) and the
saved video (its frame count).

ComfyUI runs the nodes under torch.inference_mode(), which is what found that three of the four
weight_dtype options crashed: options are tested here, in the host, not only in the library."""

import os
import re

import pytest
import torch
from safetensors.torch import load_file, save_file

from comfy_host import fetch_output, outcome, run_prompt, upload
from hystream.families.hunyuan_video.demo import TINY_DIT, random_dit_state_dict, write_comfy_llava, write_comfy_vae
from hystream.video_io import read_video, write_mp4
from test_host_api import workflow, write_png
from tiny_dit import save_layout

SMALL = {"EmptyHunyuanLatentVideo": {"width": 64, "height": 48, "length": 5}, "HyStreamSampler": {"steps": 2},
         "HyStreamImageToVideo": {"width": 64, "height": 48, "length": 5},
         "HyStreamEmptyLatentVideo": {"width": 64, "height": 48, "length": 5},
         "HyStreamFramePackSampler": {"width": 64, "height": 48, "seconds": 0.1, "window": 2, "steps": 1}}
# Where each node lives in the example workflows (API ids)
HOME = {"HyStreamLoRA": ("hunyuan_t2v_lora_lowvram", "9"), "HyStreamLoadVideo": ("hunyuan_v2v_lowvram", "10"),
        "HyStreamVAEEncode": ("hunyuan_v2v_lowvram", "11"), "HyStreamStepCache": ("hunyuan_t2v_stepcache_lowvram", "13"),
        "HyStreamImageToVideo": ("hunyuan_i2v_lowvram", "12"), "HyStreamTextEncodeImage": ("hunyuan_i2v_lowvram", "4"),
        "HyStreamEmptyLatentVideo": ("hunyuan15_t2v_lowvram", "5"),
        "HyStreamFramePackSampler": ("hunyuan_framepack_lowvram", "6")}
T2V_IDS = {"HyStreamDiTLoader": "1", "HyStreamTextEncoderLoader": "2", "HyStreamVAELoader": "3",
           "HyStreamTextEncode": "4", "HyStreamSampler": "6", "HyStreamVAEDecode": "7", "HyStreamSaveVideo": "8"}
# an overlap is at most half its tile: the largest overlap is run with the largest tile
PAIRED = {"tile_overlap": ("tile_size", 2048), "temporal_overlap": ("temporal_tile", 512)}
# min, default and max tiles all cover the tiny video in one tile: a small tile (with an overlap it allows)
# is run too, so that a tile size that is ignored shows; the temporal one on 9 frames (3 latent frames)
SMALL_TILES = {"tile_size": (32, "tile_overlap", 16), "temporal_tile": (8, "temporal_overlap", 4)}
# 1000 steps take minutes on a CPU: the maximum runs with denoise 0.002, the last round(1000 × 0.002) = 2
# steps of the 1000-step schedule (2 only when steps = 1000 reached the sampler; the default would run 0)
MAX_STEPS_DENOISE = 0.002
# 1025 frames: the tiny VAE decodes them for over 10 minutes on a CPU. At the maximum length the graph ends in
# ComfyUI's SaveLatent right after the node: the host accepts 1025 and the node makes its 257-frame latent
# (test_a_number_beyond_its_maximum_is_refused_at_queue_time: 1029 is refused with a clear message)
LATENT_ONLY = {("HyStreamImageToVideo", "length", "max"): 2, ("HyStreamEmptyLatentVideo", "length", "max"): 0}
WEIGHTS = {"auto": "bfloat16", "bf16": "bfloat16", "fp16": "float16", "fp8_e4m3fn": "float8_e4m3fn"}  # the demo DiT is bf16


@pytest.fixture(scope="module")
def variants(comfy_host, tmp_path_factory):
    """The other files users own, next to the demo's Comfy-Org ones, in the host's model folders."""
    models = comfy_host.models["models"]
    sd = random_dit_state_dict(TINY_DIT)
    dits = [os.path.relpath(save_layout(sd, layout, os.path.join(models, "diffusion_models"), TINY_DIT)[0],
                            os.path.join(models, "diffusion_models")) for layout in ("tencent", "fp8", "fp8_scaled", "pt")]
    save_layout(sd, "diffusers", os.path.join(models, "diffusion_models"), TINY_DIT)  # listed shard by shard
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(os.path.join(models, "text_encoders", "tokenizer.json")).get_vocab_size()
    write_comfy_llava(os.path.join(models, "text_encoders"), vocab, scaled_fp8=False)
    write_comfy_vae(os.path.join(models, "vae"), name="hunyuan_video_vae_kijai_bf16.safetensors", ldm_names=False)
    g = torch.Generator().manual_seed(1)
    h = TINY_DIT.hidden
    for name, keys in {
        "hunyuan_lora_musubi.safetensors": {"lora_unet_double_blocks_1_img_attn_qkv": (3 * h, h),
                                            "lora_unet_single_blocks_2_linear1": (3 * h + TINY_DIT.single_mlp_hidden, h)},
        "hunyuan_lora_diffusers.safetensors": {"transformer.transformer_blocks.0.attn.to_q": (h, h),
                                               "transformer.single_transformer_blocks.1.proj_out": (h, h + TINY_DIT.single_mlp_hidden)},
    }.items():
        lora = {}
        for base, (out, inp) in keys.items():
            down, up = (".lora_down.weight", ".lora_up.weight") if base.startswith("lora_unet") else (".lora_A.weight", ".lora_B.weight")
            lora[base + down] = torch.randn(4, inp, generator=g) * 0.05
            lora[base + up] = torch.randn(out, 4, generator=g) * 0.05
        save_file(lora, os.path.join(models, "loras", name))
    clip = torch.linspace(0, 1, 9)[:, None, None, None].expand(9, 48, 64, 3).contiguous()
    tmp = tmp_path_factory.mktemp("videos")
    upload(comfy_host, write_mp4(clip, str(tmp / "a.mp4")), "input_video.mp4")
    upload(comfy_host, write_mp4(clip[:5], str(tmp / "b.mp4")), "second_clip.mp4")
    upload(comfy_host, write_png(str(tmp / "start.png"), 40, 70), "start_image.png")
    # the files users expect to work (other tests of this session may add broken ones to the same folders)
    good = {"dit_name": set(dits) | {"hunyuan_video_t2v_720p_bf16.safetensors"},
            "llm_name": {"llava_llama3_fp8_scaled.safetensors", "llava_llama3_fp16.safetensors"},
            "clip_name": {"clip_l.safetensors"},
            "vae_name": {"hunyuan_video_vae_bf16.safetensors", "hunyuan_video_vae_kijai_bf16.safetensors"},
            "lora_name": {"hunyuan_video_demo_lora.safetensors", "hunyuan_lora_musubi.safetensors",
                          "hunyuan_lora_diffusers.safetensors"},
            "video": {"input_video.mp4", "second_clip.mp4"}, "vision_name": {"llava_llama3_vision.safetensors"},
            # the 1.0 I2V workflow: its DiT takes no SigLIP states (1.5's do: test_host15)
            "HyStreamImageToVideo.vision_name": {"none"},
            "HyStreamFramePackSampler.vision_name": {"sigclip_vision_patch14_384.safetensors"},
            # the demo DiTs have 2 heads: 8 ranks are refused by name (test_host_ranks runs 2)
            "HyStreamSampler.gpus": {1, 2}, "HyStreamFramePackSampler.gpus": {1, 2}}
    return dits, good


def expected_kind(node: str, name: str, value, good: dict) -> str:
    """'ok' where a user expects the option to work; 'any' where our refusal is right (a CLIP file picked
    as the LLaVA; a 1.5 file in a 1.0 workflow; a file some other test put there to be refused). `good` is
    keyed by input name, or by node.input where one node's input differs from another's of the same name."""
    if name == "dit_name" and value.startswith("HunyuanVideo/transformer/"):
        return "ok"  # any shard of the diffusers folder opens the whole set
    allowed = good.get(f"{node}.{name}", good.get(name))
    return "ok" if allowed is None or value in allowed else "any"


def options(info: dict):
    """(node, input, value, label) for every combo value and every number's min / default / max."""
    for node in sorted(info):
        if not node.startswith("HyStream"):
            continue
        spec = info[node]["input"]
        for name, (kind, *rest) in {**spec.get("required", {}), **spec.get("optional", {})}.items():
            extra = rest[0] if rest else {}
            if isinstance(kind, list):
                for value in kind:
                    yield node, name, value, f"{value}"
            elif kind in ("INT", "FLOAT"):
                for label in ("min", "default", "max"):
                    if label in extra:
                        yield node, name, extra[label], label
                if name in SMALL_TILES:
                    yield node, name, SMALL_TILES[name][0], "small"


def graph_for(node: str, name: str, value, label: str):
    wf_name, node_id = HOME.get(node, ("hunyuan_t2v_lowvram", T2V_IDS.get(node)))
    wf = workflow(wf_name)
    for n in wf.values():
        n["inputs"].update(SMALL.get(n["class_type"], {}))
        if n["class_type"] == "HyStreamLoadVideo":
            n["inputs"]["max_frames"] = 9
    # a negative prompt, so that every cfg runs true CFG (it is ignored at cfg 1)
    wf["19"] = {"class_type": "HyStreamTextEncode", "inputs": {"text_encoder": ["2", 0], "prompt": "blurry, static"}}
    wf["6"]["inputs"]["negative"] = ["19", 0]
    wf[node_id]["inputs"][name] = value
    if name in PAIRED and label == "max":
        tile, largest = PAIRED[name]
        wf[node_id]["inputs"][tile] = largest
    if label == "small":
        wf[node_id]["inputs"][SMALL_TILES[name][1]] = SMALL_TILES[name][2]
        if "5" in wf and wf["5"]["class_type"] == "EmptyHunyuanLatentVideo":
            wf["5"]["inputs"]["length"] = 9
    if (node, name, label) == ("HyStreamSampler", "steps", "max"):
        wf["6"]["inputs"]["denoise"] = MAX_STEPS_DENOISE
    if (node, name, label) == ("HyStreamFramePackSampler", "seconds", "max"):  # 3600 frames: 28 sections, not 720,
        wf[node_id]["inputs"].update(window=33, width=16, height=16)  # at the smallest size the VAE decodes quickly
    if (node, name, label) in LATENT_ONLY:
        del wf["6"], wf["7"], wf["19"]
        wf["8"] = {"class_type": "SaveLatent", "inputs": {"samples": [node_id, LATENT_ONLY[node, name, label]],
                                                           "filename_prefix": "options/latent"}}
    if node == "HyStreamSaveVideo" and name == "filename_prefix":
        wf[node_id]["inputs"][name] = "options/run"
    return wf


def progress_max(result: dict, node_id: str) -> int | None:
    steps = [m["data"]["max"] for m in result["messages"] if m["type"] == "progress" and m["data"]["node"] == node_id]
    return max(steps) if steps else None


def saved_frames(host, result: dict, tmp_path) -> int:
    """Frames of the saved video, or latent frames of the saved latent (LATENT_ONLY)."""
    outputs = result["history"]["outputs"]["8"]
    item = (outputs.get("images") or outputs["latents"])[0]
    path = fetch_output(host, item, str(tmp_path / item["filename"]))
    return load_file(path)["latent_tensor"].shape[2] if path.endswith(".latent") else read_video(path)[0].shape[0]


def effect_problem(host, node: str, name: str, value, label: str, result: dict, log: str, tmp_path) -> str | None:
    """Why the option did not take effect (None: it did, or it is not one checked here)."""
    line = re.search(r"HyStream sampler: .*", log)
    line = line.group(0) if line else ""
    if node == "HyStreamDiTLoader" and name == "weight_dtype":
        want = f"block weights {WEIGHTS[value]};"
    elif node == "HyStreamDiTLoader" and name == "prefetch_blocks":
        want = f"through {value + 1} slots;"
    elif node == "HyStreamSampler" and name == "steps":
        want = f"HyStream sampler: {2 if label == 'max' else value} steps on"
    elif node == "HyStreamStepCache" and name == "method":
        want = f"step cache {value} (threshold"
    elif node.startswith("HyStreamVAE") and name in SMALL_TILES and label in ("max", "small"):
        tiles = progress_max(result, "7" if node == "HyStreamVAEDecode" else "11")
        ok = tiles == 1 if label == "max" else (tiles or 0) > 1
        return None if ok else f"{tiles} tiles"
    elif name == "length":
        frames = saved_frames(host, result, tmp_path)
        drop = 4 if node == "HyStreamImageToVideo" else 0  # HunyuanVideo-I2V's reference drops 4 frames
        want = (value - 1) // 4 + 1 if (node, name, label) in LATENT_ONLY else max(value - drop, 1)
        return None if frames == want else f"{frames} frames saved, {want} expected"
    else:
        return None
    return None if want in line else f"no {want!r} in the sampler's log line {line!r}"


def test_every_option_of_every_node(comfy_host, variants, tmp_path):
    dits, good = variants
    info = comfy_host.get("/object_info")
    listed = info["HyStreamDiTLoader"]["input"]["required"]["dit_name"][0]
    assert set(dits) <= set(listed) and any(n.startswith("HunyuanVideo") for n in listed), listed
    runs, bad = 0, []
    only = os.environ.get("HYSTREAM_OPTIONS")  # a regex on node.input: run just those (for break checks)
    for node, name, value, label in options(info):
        if only and not re.search(only, f"{node}.{name}"):
            continue
        wf = graph_for(node, name, value, label)
        if "6" in wf and (node != "HyStreamSampler" or name != "seed"):
            wf["6"]["inputs"]["seed"] = 1000 + runs  # a new seed: ComfyUI's cache never skips the sampler
        log_before = len(comfy_host.log())
        result = run_prompt(comfy_host, wf, timeout=600)
        got = outcome(result)
        runs += 1
        want = expected_kind(node, name, value, good)
        if got.startswith("generic") or (want == "ok" and got != "ok"):
            bad.append(f"{node}.{name}={value!r} ({label}): {got}")
        elif got == "ok" and (problem := effect_problem(comfy_host, node, name, value, label, result,
                                                        comfy_host.log()[log_before:], tmp_path)):
            bad.append(f"{node}.{name}={value!r} ({label}) ran but did not take effect: {problem}")
    assert not bad, "\n".join(bad)
    assert only or runs > 60, runs
    assert comfy_host.get("/system_stats")


@pytest.mark.parametrize(("node", "name", "beyond"), [("HyStreamSampler", "steps", 1001),
                                                    ("HyStreamImageToVideo", "length", 1029),
                                                    ("HyStreamEmptyLatentVideo", "length", 1029)])
def test_a_number_beyond_its_maximum_is_refused_at_queue_time(comfy_host, node, name, beyond):
    """The maxima run above (1000 steps, 1025 frames) are the real limits: one more is a clear refusal."""
    info = comfy_host.get("/object_info")[node]["input"]["required"][name][1]
    assert beyond > info["max"], info
    result = run_prompt(comfy_host, graph_for(node, name, beyond, "beyond"))
    assert result["status"] == "rejected", outcome(result)
    errors = [e for n in result["answer"]["node_errors"].values() for e in n["errors"]]
    assert any(e["type"] == "value_bigger_than_max" and e["message"] == f"Value {beyond} bigger than max of {info['max']}"
               and e["details"] == name for e in errors), errors
