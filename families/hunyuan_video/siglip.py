"""SigLIP's view of the start image for FramePack: transformers' SiglipVisionModel (its last hidden state, after
the post-norm; the pooling head is never built), its config read from the weights, loaded from the files users
have: ComfyUI's `clip_vision/sigclip_vision_patch14_384.safetensors` (Flux Redux's, `vision_model.*`) and
lllyasviel's `flux_redux_bfl` folder (`image_encoder/` with config.json). Preprocessed as FramePack's demo does
with SiglipImageProcessor: the 8-bit image resized to the model's square side (PIL bicubic), scaled to [-1, 1].
Small (0.8 GB in bf16): loaded whole for one image, then freed."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import torch
from torch import nn

from ...errors import InputError, StateDictError, WrongModelError
from ...loaders.checkpoint import open_checkpoint
from ...loaders.dtypes import compute_dtype, dominant_float_dtype
from ...loaders.key_check import check_tensors, key_prefix
from ...loaders.model_kind import describe_model

ANCHOR = "embeddings.patch_embedding.weight"
HEADS_BY_WIDTH = {1152: 16}  # so400m (head dim 72); other SigLIPs use head dim 64
FILE_HINT = "sigclip_vision_patch14_384.safetensors (ComfyUI's models/clip_vision, from Flux Redux)"


def infer_siglip_config(shapes: dict[str, tuple[int, ...]], describe: str, heads: int | None = None):
    import transformers

    hidden, channels, patch, _ = shapes["embeddings.patch_embedding.weight"]
    positions = shapes["embeddings.position_embedding.weight"][0]
    side = round(positions ** 0.5)
    heads = heads or HEADS_BY_WIDTH.get(hidden, hidden // 64)
    if side * side != positions or not heads or hidden % heads:
        raise StateDictError("a SigLIP vision model (a square grid of patch positions, no class token)",
                             f"width {hidden}, {positions} positions in {describe}", "use " + FILE_HINT)
    layers = len({int(m.group(1)) for k in shapes if (m := re.match(r"encoder\.layers\.(\d+)\.", k))})
    return transformers.SiglipVisionConfig(
        hidden_size=hidden, intermediate_size=shapes["encoder.layers.0.mlp.fc1.weight"][0], num_hidden_layers=layers,
        num_attention_heads=heads, num_channels=channels, image_size=side * patch, patch_size=patch,
        hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, vision_use_head=False)


class SiglipVision(nn.Module):
    """pixel values [B, 3, S, S] in [-1, 1] → states [B, (S/patch)², width]."""

    def __init__(self, config):
        super().__init__()
        import transformers

        with torch.device("meta"):
            self.model = transformers.SiglipVisionModel(config)
        self.image_size, self.width = config.image_size, config.hidden_size

    def expected_keys(self) -> list[str]:
        return [k for k in self.model.state_dict() if not k.endswith("position_ids")]

    def load(self, state: dict[str, torch.Tensor], device, dtype) -> None:
        self.model.load_state_dict({k: v.to(device=device, dtype=dtype) for k, v in state.items()}, strict=False,
                                   assign=True)
        for name, _ in list(self.model.named_buffers()):
            if name.endswith("position_ids"):  # non-persistent: rebuild it on the device
                owner = self.model.get_submodule(name.rpartition(".")[0])
                owner.position_ids = torch.arange(owner.num_positions, device=device).expand(1, -1)
        self.eval()

    @torch.no_grad()
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        p = next(self.model.parameters())
        return self.model(pixel_values=pixels.to(p.device, p.dtype)).last_hidden_state


def siglip_pixels(image: torch.Tensor, size: int) -> torch.Tensor:
    """IMAGE [1, H, W, 3] in [0, 1] → pixel values [1, 3, size, size]: the 8-bit image resized to size × size
    (PIL bicubic, aspect not kept) and scaled to [-1, 1], as SiglipImageProcessor does."""
    from PIL import Image

    if not torch.is_tensor(image) or image.dim() != 4 or image.shape[-1] < 3:
        raise InputError("a start IMAGE [N, H, W, 3]", f"{getattr(image, 'shape', type(image).__name__)}",
                         "connect a LoadImage output as the start image")
    pixels = (image[0, :, :, :3].float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    resized = np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
    x = torch.from_numpy(resized / np.float32(255.0)).permute(2, 0, 1)[None]
    return (x - 0.5) / 0.5


def _heads_from_config(path: str) -> int | None:
    for folder in (path, os.path.join(path, "image_encoder")):
        config = os.path.join(folder, "config.json")
        if os.path.isfile(config):
            with open(config) as f:
                data = json.load(f)
            return (data.get("vision_config") or data).get("num_attention_heads")
    return None


def load_siglip(path: str, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> SiglipVision:
    """The SigLIP vision model in the file or folder at `path`, on `device`."""
    device = torch.device(device)
    source = open_checkpoint(path, subfolders=("image_encoder",))
    try:
        keys = source.keys()
        prefix = key_prefix(keys, ANCHOR)
        if prefix is None or prefix + "embeddings.class_embedding" in keys:  # CLIP has a class token; SigLIP none
            raise WrongModelError("a SigLIP vision model for FramePack's start image (" + FILE_HINT + ")",
                                  f"{describe_model(keys)} in {source.describe}",
                                  "put sigclip_vision_patch14_384.safetensors in models/clip_vision and pick it")
        local = {k[len(prefix):]: k for k in keys if k.startswith(prefix) and not k[len(prefix):].startswith("head.")
                 and not k.endswith("position_ids")}
        metas = {n: source.info(k) for n, k in local.items()}
        config = infer_siglip_config({n: tuple(m.shape) for n, m in metas.items()}, source.describe,
                                     _heads_from_config(path) if os.path.isdir(path) else None)
        vision = SiglipVision(config)
        expected = vision.expected_keys()
        lead = "vision_model." if expected and expected[0].startswith("vision_model.") else ""
        shapes = dict(vision.model.state_dict())
        check_tensors({k: tuple(shapes[k].shape) for k in expected}, {lead + n: metas[n] for n in local},
                      unused=[], describe=source.describe, what="the SigLIP vision model")
        dtype = dtype or compute_dtype("auto", dominant_float_dtype(m.dtype for m in metas.values()), device)
        vision.load({lead + n: source.read(k) for n, k in local.items()}, device, dtype)
        return vision
    finally:
        source.close()


def encode_start_image(path: str, image: torch.Tensor, device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The start image's SigLIP states [1, N, width] (float32, CPU); the model is loaded and freed here."""
    vision = load_siglip(path, device, dtype)
    try:
        return vision(siglip_pixels(image, vision.image_size)).float().cpu()
    finally:
        del vision
