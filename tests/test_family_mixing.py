"""A 1.0 file, CONDITIONING or LATENT given where HunyuanVideo 1.5 is wanted (and the reverse) is refused before
model work, and the message names both families (or the wrong file and what to pick)."""

import pytest
import torch

from hystream import pipeline
from hystream.errors import HyStreamError
from hystream.families.hunyuan_video.demo import build_models as build_10
from hystream.families.hunyuan_video_15.demo import build_models as build_15
from hystream.loading import load_dit, load_text_encoder, load_vae


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("mix")
    m10, m15 = build_10(str(root / "a")), build_15(str(root / "b"))
    with torch.inference_mode():
        te10, te15 = load_text_encoder(m10["llm"], m10["clip"]), load_text_encoder(m15["llm"], m15["clip"])
        conds = {"1.0": pipeline.encode_prompt(te10, "a cat"), "1.5": pipeline.encode_prompt(te15, "a cat")}
    te10.close()
    te15.close()
    dits = {"1.0": load_dit(m10["dit"]), "1.5": load_dit(m15["dit"])}
    vaes = {"1.0": load_vae(m10["vae"]), "1.5": load_vae(m15["vae"])}
    yield {"files": {"1.0": m10, "1.5": m15}, "conds": conds, "dits": dits, "vaes": vaes}
    for d in dits.values():
        d.close()


def refused(fn) -> str:
    with pytest.raises(HyStreamError) as e, torch.inference_mode():
        fn()
    return str(e.value)


@pytest.mark.parametrize(("model", "other"), [("1.0", "1.5"), ("1.5", "1.0")])
def test_conditioning_and_latents_of_the_other_family(world, model, other):
    dit, vae = world["dits"][model], world["vaes"][model]
    own = pipeline.empty_latent(64, 64, 9, family=dit.family)
    foreign = pipeline.empty_latent(64, 64, 9, family=world["dits"][other].family)
    settings = pipeline.SampleSettings(steps=1)
    for message in (refused(lambda: pipeline.sample(dit, world["conds"][other], own, settings)),
                    refused(lambda: pipeline.sample(dit, world["conds"][model], foreign, settings)),
                    refused(lambda: pipeline.decode(vae, foreign))):
        assert f"HunyuanVideo {model}" in message and f"HunyuanVideo {other}" in message, message
    assert dit.stats.as_dict()["forwards"] == 0


def test_second_text_encoder_of_the_other_family(world):
    f10, f15 = world["files"]["1.0"], world["files"]["1.5"]
    message = refused(lambda: load_text_encoder(f15["llm"], f10["clip"]))
    assert "ByT5" in message and "clip_l.safetensors" in message
    message = refused(lambda: load_text_encoder(f10["llm"], f15["clip"]))
    assert "CLIP-L" in message and "byt5_small_glyphxl_fp16.safetensors" in message
    message = refused(lambda: load_text_encoder(f15["llm"], f15["llm"]))
    assert "qwen_2.5_vl_7b_fp8_scaled.safetensors" in message
