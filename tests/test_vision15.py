"""HunyuanVideo 1.5's SigLIP image encoder. A tiny random SiglipVisionModel (2 layers, width 144 = 2 heads of the
real 72, 28 px in 2 × 2 patches of 14) saved as ComfyUI's sigclip_vision_patch14_384.safetensors and as HF
folders, loaded through our loader: its states equal transformers' `last_hidden_state` on the same pixels
(≤ 1e-5, fp32). Our torch preprocessing equals diffusers' HunyuanVideo15ImageToVideoPipeline's (PIL Lanczos
cover + centre crop to the video size, then SiglipImageProcessor's 384² bicubic squash, /255, mean/std 0.5) up
to the last bit of 8-bit rounding: the resizes are PIL's filters in float, PIL and torchvision's uint8 kernels
use fixed-point weights, so a few pixels land one level (rarely two) apart. Wrong files are refused clearly."""

import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from hystream.errors import CorruptFileError, InputError, StateDictError, WrongModelError
from hystream.families.hunyuan_video_15.demo_vision import (
    TINY_SIGLIP,
    comfy_state_dict,
    tiny_siglip,
    write_comfy_siglip,
    write_hf_siglip,
)
from hystream.loaders import siglip_loader as vision_loader
from hystream.loaders.siglip_loader import claims_vision, encode_start_image, load_siglip
from hystream.models.siglip import fit_levels, fit_to_video, siglip_pixels

SIZE = TINY_SIGLIP["image_size"]
LEVEL = 2 / 255  # one 8-bit level in SigLIP's normalised units ((x / 255 - 0.5) / 0.5)
TARGET = 640  # the 480p DiT's target_size: the pipeline's video-size buckets
SHAPES = [(300, 500), (512, 288), (97, 61), (720, 1280), (640, 640)]  # landscape, portrait, tiny, 16:9, square


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("siglip")
    model = tiny_siglip(seed=1)
    hf4 = str(root / "hf4")  # a folder saved by transformers 4 (the hub's image_encoder/): names under vision_model.
    write_hf_siglip(model, hf4)
    os.remove(os.path.join(hf4, "model.safetensors"))
    save_file(comfy_state_dict(model, torch.float32), os.path.join(hf4, "model.safetensors"))
    files = {"comfy": write_comfy_siglip(model, str(root / "clip_vision")),
             "prefixed": write_comfy_siglip(model, str(root / "other"), "siglip.safetensors", prefix="image_encoder."),
             "hf5": write_hf_siglip(model, str(root / "hf5")),  # transformers 5's save_pretrained: no lead
             "hf4": hf4,
             "pipeline": write_hf_siglip(model, str(root / "pipeline" / "image_encoder")).rsplit(os.sep, 1)[0]}
    return {"model": model, "files": files, "root": root}


def feature_extractor(size: int = SIZE):
    from transformers import SiglipImageProcessor

    return SiglipImageProcessor(size={"height": size, "width": size}, resample=3, do_rescale=True,
                                rescale_factor=1 / 255, do_normalize=True, image_mean=[0.5] * 3, image_std=[0.5] * 3)


def pipeline_image(rgb: np.ndarray):
    """diffusers' I2V pipeline up to the image encoder: the video size from the image's aspect, the crop to it."""
    from diffusers.pipelines.hunyuan_video1_5.image_processor import HunyuanVideo15ImageProcessor
    from PIL import Image

    video = HunyuanVideo15ImageProcessor(vae_scale_factor=16, do_resize=False, do_convert_rgb=True)
    image = Image.fromarray(rgb)
    height, width = video.calculate_default_height_width(height=image.size[1], width=image.size[0], target_size=TARGET)
    return video.resize(image, height=height, width=width, resize_mode="crop"), width, height


def as_image(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb.copy()).float()[None] / 255


def random_rgb(shape, seed=0, smooth=False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if not smooth:  # noise: every pixel an edge, the hardest case for rounding
        return rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8)
    y, x = np.mgrid[:shape[0], :shape[1]] / max(shape)
    waves = [np.sin(7 * x * (c + 1) + 5 * y + rng.uniform(0, 6)) for c in range(3)]
    return np.clip(np.stack(waves, -1) * 110 + 128, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("layout", ["comfy", "prefixed", "hf5", "hf4", "pipeline"])
def test_states_equal_transformers_on_the_same_pixels(world, layout):
    from PIL import Image

    pixels = feature_extractor()(Image.fromarray(random_rgb((40, 56), seed=3)), return_tensors="pt")
    with torch.no_grad():
        want = world["model"](**pixels).last_hidden_state
    vision = load_siglip(world["files"][layout])
    assert not any("head" in k for k in vision.expected_shapes())  # the pooling head stays in the file
    assert (vision.image_size, vision.width, vision.tokens) == (SIZE, TINY_SIGLIP["hidden_size"], 4)
    got = vision(pixels["pixel_values"])
    assert got.shape == want.shape == (1, 4, TINY_SIGLIP["hidden_size"])
    assert (got - want).abs().max().item() <= 1e-5


@pytest.mark.parametrize("shape", SHAPES)
def test_fit_to_video_is_the_pipelines_crop(shape):
    """PIL's Lanczos cover + centre crop: the same geometry, pixels within one 8-bit level (fixed-point weights)."""
    rgb = random_rgb(shape, seed=sum(shape))
    want, width, height = pipeline_image(rgb)
    got = fit_to_video(as_image(rgb), width, height)
    assert got.shape == (1, height, width, 3)
    diff = (got[0] * 255 - torch.from_numpy(np.asarray(want).copy()).float()).abs()
    assert diff.max().item() <= 1 and (diff > 0).float().mean().item() <= 1e-3


@pytest.mark.parametrize("shape", [(1177, 364), (1025, 404)])
def test_fit_where_pillow_13_resizes_vertically_first(shape):
    """This venv's Pillow 13 runs the vertical pass first for some downscales of tall images (Pillow ≤ 12, its main
    branch and torch: always horizontal first, as we do). PIL clips to 8 bits between the passes, so the order
    matters where the first pass overshoots: on noise (an edge everywhere) tens of levels; on a picture ≤ 2."""
    rgb = random_rgb(shape, seed=sum(shape), smooth=True)
    want, width, height = pipeline_image(rgb)
    got = fit_to_video(as_image(rgb), width, height)
    diff = (got[0] * 255 - torch.from_numpy(np.asarray(want).copy()).float()).abs()
    assert diff.max().item() <= 2 and (diff > 0).float().mean().item() <= 0.02


@pytest.mark.parametrize("smooth", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_pixels_are_the_pipelines(shape, smooth):
    """The whole preprocessing at the real 384 px: at most two levels apart, on ≤ 2 % of the values (1.4 % at
    worst here: a small smooth image blown up 8×, where many sums sit near a rounding edge)."""
    rgb = random_rgb(shape, seed=sum(shape), smooth=smooth)
    cropped, width, height = pipeline_image(rgb)
    want = feature_extractor(384)(cropped, return_tensors="pt").pixel_values
    got = siglip_pixels(fit_levels(as_image(rgb), width, height), 384)
    assert got.shape == want.shape == (1, 3, 384, 384)
    diff = (got - want).abs()
    assert diff.max().item() <= 2 * LEVEL + 1e-6 and (diff > 1e-6).float().mean().item() <= 0.02
    assert diff.mean().item() <= 0.03 * LEVEL


def test_encode_is_the_pipelines_image_embeds(world):
    """End to end against HunyuanVideo15ImageToVideoPipeline._get_image_embeds on the pipeline's cropped image."""
    from diffusers import HunyuanVideo15ImageToVideoPipeline

    rgb = random_rgb((300, 500), seed=5, smooth=True)
    cropped, width, height = pipeline_image(rgb)
    with torch.no_grad():
        want = HunyuanVideo15ImageToVideoPipeline._get_image_embeds(world["model"], feature_extractor(), cropped,
                                                                   torch.device("cpu"))
    image = torch.cat([as_image(rgb), torch.zeros(1, *rgb.shape[:2], 3)])  # the first frame counts
    image = torch.cat([image, torch.ones(2, *rgb.shape[:2], 1)], -1)  # an alpha channel is dropped
    got = encode_start_image(world["files"]["comfy"], image, width, height)
    assert got.dtype == torch.float32 and got.device.type == "cpu" and got.shape == want.shape
    # the pixels differ by one level on a few values (see above): ≤ 1e-3 of the states' range here
    assert (got - want).abs().max().item() <= 2e-3 * want.abs().max().item()


def test_config_at_real_size():
    """FLUX.1-Redux's encoder from shapes alone: 27 layers, 16 heads of 72, 384 px (27 patches of 14 use 378)."""
    import transformers

    real = transformers.SiglipVisionConfig(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                                           num_attention_heads=16, image_size=384, patch_size=14)
    with torch.device("meta"):
        sd = transformers.SiglipVisionModel(real).state_dict()
    shapes = {k.removeprefix("vision_model."): tuple(v.shape) for k, v in sd.items() if "head." not in k}
    cfg = vision_loader.infer_siglip_config(shapes, {}, "the real shapes")
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.image_size, cfg.patch_size,
            cfg.intermediate_size) == (1152, 27, 16, 384, 14, 4304)
    assert (cfg.image_size // cfg.patch_size) ** 2 == 729


def test_claims_vision(world, tmp_path):
    from safetensors import safe_open

    for layout in ("comfy", "prefixed"):
        with safe_open(world["files"][layout], "pt") as f:
            assert claims_vision(f.keys())
    others = foreign_files(tmp_path)
    for name, path in others.items():
        with safe_open(path, "pt") as f:
            assert not claims_vision(f.keys()), name


def foreign_files(tmp_path) -> dict[str, str]:
    import transformers

    clip = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=1, image_size=32, patch_size=16))
    tower = {("" if k.startswith("vision_model.") else "vision_model.") + k: v for k, v in clip.state_dict().items()
             if not k.endswith("position_ids")}
    projector = {f"multi_modal_projector.linear_{i}.{p}": torch.zeros((64, 64) if p == "weight" else (64,))
                 for i in (1, 2) for p in ("weight", "bias")}
    text = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=1))
    files = {"llava": (tower | projector, "llava_llama3_vision.safetensors"), "clip": (tower, "clip_vision_h.safetensors"),
             "text": ({("" if k.startswith("text_model.") else "text_model.") + k: v for k, v in text.state_dict().items()
                       if not k.endswith("position_ids")}, "clip_l.safetensors")}
    out = {}
    for name, (sd, file) in files.items():
        out[name] = str(tmp_path / file)
        save_file({k: v.contiguous() for k, v in sd.items()}, out[name])
    return out


def test_wrong_files_are_refused(world, tmp_path):
    others = foreign_files(tmp_path)
    with pytest.raises(WrongModelError) as info:
        load_siglip(others["llava"])
    assert "LLaVA's vision tower" in str(info.value) and "HyStreamTextEncodeImage" in str(info.value)
    assert "sigclip_vision_patch14_384.safetensors" in str(info.value)
    with pytest.raises(WrongModelError) as info:
        load_siglip(others["clip"])
    assert "a CLIP vision model" in str(info.value) and "models/clip_vision" in str(info.value)
    with pytest.raises(WrongModelError) as info:
        load_siglip(others["text"])
    assert "CLIP text encoder" in str(info.value) and "sigclip_vision_patch14_384" in str(info.value)


def test_damaged_files_are_refused(world, tmp_path):
    with open(world["files"]["comfy"], "rb") as f:
        data = f.read()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) - 1000])  # a download that stopped early
    with pytest.raises(CorruptFileError):
        load_siglip(str(cut))
    sd = comfy_state_dict(world["model"])
    partial = str(tmp_path / "partial.safetensors")  # a layer's tensors gone
    save_file({k: v for k, v in sd.items() if ".layers.1.mlp." not in k}, partial)
    with pytest.raises(StateDictError) as info:
        load_siglip(partial)
    assert "missing tensors" in str(info.value) and "layers.1.mlp" in str(info.value)


def test_bad_inputs(world):
    vision = load_siglip(world["files"]["comfy"])
    with pytest.raises(InputError):
        vision.encode(torch.zeros(16, 16, 3), 32, 32)  # no batch dimension
    with pytest.raises(InputError):
        vision.encode(torch.zeros(1, 16, 16, 3), 0, 32)
