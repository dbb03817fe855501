"""Every option of every HyStream node, run through the real ComfyUI the way users pick them: each value of
each combo input (weight dtypes, every model file in the lists — every DiT layout and precision, both
LLaVA files, both VAE layouts, LoRAs in every key format, the input videos), and every number input at
its minimum, its default and its maximum (0 = auto included). Each run must succeed, or end in a queue-time
refusal or an error of HyStream's family; the ones a user expects to work must succeed.

ComfyUI runs the nodes under torch.inference_mode(), which is what found that three of the four
weight_dtype options crashed: options are tested here, in the host, not only in the library."""

import os

import pytest
import torch
from safetensors.torch import save_file

from comfy_host import outcome, run_prompt, upload
from hystream.families.hunyuan_video.demo import TINY_DIT, random_dit_state_dict, write_comfy_llava, write_comfy_vae
from hystream.video_io import write_mp4
from test_host_api import workflow, write_png
from tiny_dit import save_layout

SMALL = {"EmptyHunyuanLatentVideo": {"width": 64, "height": 48, "length": 5}, "HyStreamSampler": {"steps": 2},
         "HyStreamImageToVideo": {"width": 64, "height": 48, "length": 5},
         "HyStreamEmptyLatentVideo": {"width": 64, "height": 48, "length": 5}}
# Where each node lives in the example workflows (API ids)
HOME = {"HyStreamLoRA": ("hunyuan_t2v_lora_lowvram", "9"), "HyStreamLoadVideo": ("hunyuan_v2v_lowvram", "10"),
        "HyStreamVAEEncode": ("hunyuan_v2v_lowvram", "11"), "HyStreamStepCache": ("hunyuan_t2v_stepcache_lowvram", "13"),
        "HyStreamImageToVideo": ("hunyuan_i2v_lowvram", "12"), "HyStreamTextEncodeImage": ("hunyuan_i2v_lowvram", "4"),
        "HyStreamEmptyLatentVideo": ("hunyuan15_t2v_lowvram", "5")}
T2V_IDS = {"HyStreamDiTLoader": "1", "HyStreamTextEncoderLoader": "2", "HyStreamVAELoader": "3",
           "HyStreamTextEncode": "4", "HyStreamSampler": "6", "HyStreamVAEDecode": "7", "HyStreamSaveVideo": "8"}
# 1000 steps, 1025 frames: minutes on a CPU, and no new code path
TOO_SLOW = {("HyStreamSampler", "steps", "max"), ("HyStreamImageToVideo", "length", "max"),
            ("HyStreamEmptyLatentVideo", "length", "max")}
# an overlap is at most half its tile: the largest overlap is run with the largest tile
PAIRED = {"tile_overlap": ("tile_size", 2048), "temporal_overlap": ("temporal_tile", 512)}


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
            "HyStreamImageToVideo.vision_name": {"none"}}
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
                    if label in extra and (node, name, label) not in TOO_SLOW:
                        yield node, name, extra[label], label


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
    if node == "HyStreamSaveVideo" and name == "filename_prefix":
        wf[node_id]["inputs"][name] = "options/run"
    return wf


def test_every_option_of_every_node(comfy_host, variants):
    dits, good = variants
    info = comfy_host.get("/object_info")
    listed = info["HyStreamDiTLoader"]["input"]["required"]["dit_name"][0]
    assert set(dits) <= set(listed) and any(n.startswith("HunyuanVideo") for n in listed), listed
    runs, bad = 0, []
    for node, name, value, label in options(info):
        result = run_prompt(comfy_host, graph_for(node, name, value, label), timeout=600)
        got = outcome(result)
        runs += 1
        want = expected_kind(node, name, value, good)
        if got.startswith("generic") or (want == "ok" and got != "ok"):
            bad.append(f"{node}.{name}={value!r} ({label}): {got}")
    assert runs > 60, runs
    assert not bad, "\n".join(bad)
    assert comfy_host.get("/system_stats")
