"""Load the SigLIP vision encoder (HunyuanVideo 1.5 I2V and FramePack take its view of the start image) from
the files users have: ComfyUI's
`clip_vision/sigclip_vision_patch14_384.safetensors` (HF names `vision_model.*`, any prefix; the pooling head
`vision_model.head.*` stays in the file), an HF `SiglipVisionModel` folder (diffusers' `image_encoder/`, or the
pipeline folder above it), or a full SigLIP checkpoint (its `text_model.*` is not read). The config comes from
the tensor shapes (and the folder's config.json when there is one). Small (0.86 GB in fp16): loaded whole onto
the device for one image, then freed."""

from __future__ import annotations

import json
import math
import os
import re

import torch

from ..errors import StateDictError, WrongModelError
from ..models.shapes import shape_reader
from ..models.siglip import SiglipVision
from .checkpoint import open_checkpoint
from .dtypes import compute_dtype, dominant_float_dtype
from .key_check import check_tensors, key_prefix
from .model_kind import describe_model

ANCHOR = "embeddings.patch_embedding.weight"
FILE = "sigclip_vision_patch14_384.safetensors"
SUBFOLDER = "image_encoder"  # diffusers' HunyuanVideo15ImageToVideoPipeline folder
HEAD_DIM = 72  # so400m: 1152 = 16 heads × 72 (heads are not in the shapes; an HF folder's config.json wins)
# (grid, patch) → the processor's image size where the grid does not tile it: 27 patches of 14 use 378 of 384 px
IMAGE_SIZES = {(27, 14): 384}
FIX = f"put {FILE} (Comfy-Org's SigLIP, FLUX.1-Redux's image encoder) in models/clip_vision and pick it"


def _tower_prefix(keys) -> str | None:
    return key_prefix(keys, ANCHOR)


def claims_vision(keys) -> bool:
    """A SigLIP vision tower: a patch embedding and a post-layernorm, no CLS token (CLIP towers, LLaVA's among
    them, have one)."""
    keys = set(keys)
    prefix = _tower_prefix(keys)
    return (prefix is not None and prefix + "post_layernorm.weight" in keys
            and prefix + "embeddings.class_embedding" not in keys)


def _refuse_other_models(keys: set[str], describe: str) -> None:
    """Name what the file is instead (the catalogue in model_kind.py knows CLIP and LLaVA towers, text models)."""
    raise WrongModelError(f"a SigLIP vision model ({FILE})", f"{describe_model(sorted(keys))} in {describe}", FIX)


def _hf_config(path: str) -> dict:
    """The SigLIP vision config.json of an HF / diffusers folder, else {} (a single file carries none)."""
    folder = os.path.join(path, SUBFOLDER) if os.path.isdir(os.path.join(path, SUBFOLDER)) else path
    file = os.path.join(folder, "config.json")
    if not os.path.isdir(folder) or not os.path.isfile(file):
        return {}
    try:
        with open(file, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError):
        return {}
    if isinstance(config.get("vision_config"), dict):  # a full SiglipModel's config
        config = config["vision_config"]
    return config if str(config.get("model_type", "")).startswith("siglip") else {}


def infer_siglip_config(shapes: dict[str, tuple[int, ...]], hf: dict, describe: str):
    """A transformers SiglipVisionConfig from the tower's shapes (names without prefix), cross-checked with `hf`."""
    import transformers

    shape = shape_reader(shapes, "a SigLIP vision model", describe, f"the file is incomplete: download {FILE} again")
    width, _, patch, _ = shape(ANCHOR)
    positions = shape("embeddings.position_embedding.weight")[0]
    grid = math.isqrt(positions)
    layers = len({int(m.group(1)) for k in shapes if (m := re.match(r"encoder\.layers\.(\d+)\.", k))})
    heads = hf.get("num_attention_heads") or max(width // HEAD_DIM, 1)
    if grid * grid != positions or layers < 1 or width % (heads if hf else HEAD_DIM):
        raise StateDictError("a SigLIP ViT (a square grid of patches, width a multiple of 72, ≥ 1 layer)",
                             f"{positions} positions, width {width}, {layers} layers in {describe}", FIX)
    image_size = hf.get("image_size") or IMAGE_SIZES.get((grid, patch), grid * patch)
    if image_size // patch != grid or hf.get("hidden_size", width) != width or hf.get("patch_size", patch) != patch:
        raise StateDictError("a config.json that agrees with the weights",
                             f"config {hf.get('hidden_size')} wide, patch {hf.get('patch_size')}, image "
                             f"{hf.get('image_size')}; weights {width} wide, patch {patch}, {grid}² patches in {describe}",
                             "the folder mixes files of different models; download it again")
    return transformers.SiglipVisionConfig(
        hidden_size=width, intermediate_size=shape("encoder.layers.0.mlp.fc1.weight")[0], num_hidden_layers=layers,
        num_attention_heads=heads, image_size=image_size, patch_size=patch, num_channels=shape(ANCHOR)[1],
        hidden_act=hf.get("hidden_act", "gelu_pytorch_tanh"), layer_norm_eps=hf.get("layer_norm_eps", 1e-6))


def load_siglip(path: str, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> SiglipVision:
    """The SigLIP vision encoder at `path` (file or folder), whole on `device`; the caller frees it after use."""
    device = torch.device(device)
    source = open_checkpoint(path, subfolders=(SUBFOLDER,))
    try:
        keys = set(source.keys())
        if not claims_vision(keys):
            _refuse_other_models(keys, source.describe)
        prefix = _tower_prefix(keys)
        local = {k[len(prefix):]: k for k in keys if k.startswith(prefix) and not k.startswith(prefix + "head.")
                 and not k.endswith("position_ids")}
        metas = {n: source.info(k) for n, k in local.items()}
        config = infer_siglip_config({n: m.shape for n, m in metas.items()}, _hf_config(path), source.describe)
        vision = SiglipVision(config)
        lead = vision.lead
        check_tensors(vision.expected_shapes(), {lead + n: m for n, m in metas.items()}, describe=source.describe,
                      what="the SigLIP vision model")
        dtype = dtype or compute_dtype("auto", dominant_float_dtype(m.dtype for m in metas.values()), device)
        # each tensor goes to the device as it is read: the host never holds the whole file
        vision.load({lead + n: source.read(k).to(device, dtype) for n, k in local.items()}, device, dtype)
        return vision
    finally:
        source.close()


def encode_start_image(path: str, image, width: int, height: int, device: str | torch.device = "cpu",
                       dtype: torch.dtype | None = None) -> torch.Tensor:
    """Load the encoder, turn `image` into image_embeds [1, 729, 1152] (fp32, CPU) for a width × height video,
    and free it before returning."""
    vision = load_siglip(path, device, dtype)
    try:
        return vision.encode(image, width, height)
    finally:
        del vision
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
