"""Failures that would otherwise be silent: a scaled-fp8 file missing its scales (every loader that reads
one), and NaN/Inf from any stage (damaged weights, fp16 overflow, an absurd LoRA strength). Each is an
error from our family naming the likely causes, never a black video and "success"."""

import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from hystream import pipeline
from hystream.errors import NonFiniteError, StateDictError
from hystream.families.hunyuan_video.demo import TINY_DIT, build_models, random_dit_state_dict
from hystream.loaders.lora import load_lora
from hystream.loading import load_dit, load_text_encoder, load_vae
from hystream.pipeline import SampleSettings
from tiny_dit import save_layout


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return build_models(str(tmp_path_factory.mktemp("silent")))


def read_all(path):
    with safe_open(path, "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has keys() but no __iter__


def scaled_dit(tmp_path):
    return save_layout(random_dit_state_dict(TINY_DIT), "fp8_scaled", str(tmp_path), TINY_DIT)[0]


def scaled_clip(models, tmp_path):
    sd = read_all(models["clip"])
    out = {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}
    for k, v in sd.items():
        if k.endswith(("_proj.weight", "fc1.weight", "fc2.weight")):
            scale = v.float().abs().max() / 448
            out[k], out[k[:-6] + "scale_weight"] = (v.float() / scale).to(torch.float8_e4m3fn), scale.reshape(())
        else:
            out[k] = v
    path = tmp_path / "clip_l_fp8_scaled.safetensors"
    save_file(out, str(path))
    return str(path)


def load(kind, path, models):
    tok = {"tokenizer_dir": os.path.dirname(models["llm"])}
    if kind == "dit":
        return load_dit(path)
    if kind == "llava":
        return load_text_encoder(path, models["clip"], **tok)
    return load_text_encoder(models["llm"], path, **tok)


@pytest.mark.parametrize("kind", ["dit", "llava", "clip"])
@pytest.mark.parametrize("damage", ["one_scale", "all_scales"])
def test_scaled_fp8_without_its_scales_is_refused(models, tmp_path, kind, damage):
    path = {"dit": lambda: scaled_dit(tmp_path), "llava": lambda: models["llm"],  # the demo's llava_llama3_fp8_scaled
            "clip": lambda: scaled_clip(models, tmp_path)}[kind]()
    load(kind, path, models).close()  # intact: loads
    sd = read_all(path)
    scales = sorted(k for k in sd if k.endswith(".scale_weight"))
    assert scales
    for k in (scales[len(scales) // 2:len(scales) // 2 + 1] if damage == "one_scale" else scales):
        del sd[k]
    broken = tmp_path / f"broken_{kind}.safetensors"
    save_file(sd, str(broken))
    with pytest.raises(StateDictError) as info:
        load(kind, str(broken), models).close()
    msg = str(info.value)
    assert "scale_weight" in msg and "broken_" in msg and "What to do" in msg, msg


def test_plain_fp8_without_scales_still_loads(tmp_path):
    """kijai's e4m3fn files have no marker and no scales: real = stored."""
    path = save_layout(random_dit_state_dict(TINY_DIT), "fp8", str(tmp_path), TINY_DIT)[0]
    load_dit(path).close()


def nan_dit(tmp_path, name="double_blocks.1.img_mlp.fc2.weight"):
    sd = random_dit_state_dict(TINY_DIT)
    sd[name] = torch.full_like(sd[name], float("nan"))
    return save_layout(sd, "comfy", str(tmp_path), TINY_DIT)[0]


def conditioning(models):
    te = load_text_encoder(models["llm"], models["clip"])
    try:
        return pipeline.encode_prompt(te, "a fox")
    finally:
        te.close()


def test_nan_weights_stop_sampling_at_the_first_step(models, tmp_path):
    dit = load_dit(nan_dit(tmp_path))
    steps = []
    try:
        with pytest.raises(NonFiniteError) as info:
            pipeline.sample(dit, conditioning(models), pipeline.empty_latent(32, 32, 5), SampleSettings(steps=6),
                            on_step=steps.append)
    finally:
        dit.close()
    msg = str(info.value)
    assert "step 1 of 6" in msg and "fp16" in msg and "LoRA strength" in msg and "damaged" in msg, msg
    assert steps == []  # stopped before the first step was reported, not after six


def test_an_absurd_lora_strength_is_caught(models):
    dit = load_dit(models["dit"])
    try:
        lora = load_lora(models["lora"], dit.model)
        with pytest.raises(NonFiniteError):
            pipeline.sample(dit, conditioning(models), pipeline.empty_latent(32, 32, 5), SampleSettings(steps=2),
                            loras=((lora, float("nan")),))
    finally:
        dit.close()


def test_nan_in_decode_and_in_the_prompt_is_caught(models, tmp_path):
    vae = load_vae(models["vae"])
    try:
        bad = torch.zeros(1, 16, 2, 4, 4)
        bad[0, 3, 1, 2, 2] = float("inf")
        with pytest.raises(NonFiniteError, match="latent to decode"):
            pipeline.decode(vae, bad)
        with pytest.raises(NonFiniteError, match="input frames"):
            pipeline.encode_video(vae, torch.full((5, 32, 32, 3), float("nan")))
    finally:
        vae.close()
    sd = read_all(models["llm"])
    key = next(k for k in sd if k.endswith("layers.0.mlp.down_proj.scale_weight"))
    sd[key] = torch.tensor(float("inf"))
    path = tmp_path / "llava_llama3_fp8_scaled.safetensors"
    save_file(sd, str(path))
    te = load_text_encoder(str(path), models["clip"], tokenizer_dir=os.path.dirname(models["llm"]))
    try:
        with pytest.raises(NonFiniteError, match="LLaVA-Llama-3 prompt states"):
            pipeline.encode_prompt(te, "a fox")
    finally:
        te.close()
