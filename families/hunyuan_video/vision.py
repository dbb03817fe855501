"""LLaVA's vision side for HunyuanVideo-I2V prompts: CLIP ViT (ViT-L/14-336 in LLaVA-Llama-3) and the
multimodal projector, config from tensor shapes.

The image features are the penultimate encoder layer's patch tokens (CLS dropped, LLaVA's "default"
feature selection), projected to the Llama width by linear_1 → GELU → linear_2. The last encoder layer
and the post-norm are never built. It runs once per image and is freed by its loader's caller.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import InputError, StateDictError
from ...models.shapes import shape_reader

HEAD_DIM = 64
# CLIP's preprocessing constants (openai/clip-vit-large-patch14-336's preprocessor_config.json)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def infer_vision_config(shapes: dict[str, tuple[int, ...]], describe: str):
    """A transformers CLIPVisionConfig running the encoder up to its penultimate layer."""
    import transformers

    shape = shape_reader(shapes, "a CLIP vision tower", describe, "the file is incomplete or not LLaVA's vision tower")
    hidden, _, patch, _ = shape("embeddings.patch_embedding.weight")
    positions = shape("embeddings.position_embedding.weight")[0]
    side = round((positions - 1) ** 0.5)
    if hidden % HEAD_DIM or side * side != positions - 1:
        raise StateDictError("a CLIP ViT (width a multiple of 64, a square grid of patches + CLS)",
                             f"width {hidden}, {positions} positions in {describe}", "use LLaVA-Llama-3's vision tower")
    layers = len({int(m.group(1)) for k in shapes if (m := re.match(r"encoder\.layers\.(\d+)\.", k))})
    if layers < 2:
        raise StateDictError("a vision encoder of at least 2 layers", f"{layers} in {describe}", "the file is incomplete")
    return transformers.CLIPVisionConfig(
        hidden_size=hidden, intermediate_size=shape("encoder.layers.0.mlp.fc1.weight")[0],
        num_hidden_layers=layers - 1, num_attention_heads=hidden // HEAD_DIM, image_size=side * patch,
        patch_size=patch, hidden_act="quick_gelu", layer_norm_eps=1e-5)


class Projector(nn.Module):
    def __init__(self, vision: int, text: int):
        super().__init__()
        self.linear_1 = nn.Linear(vision, text)
        self.linear_2 = nn.Linear(text, text)

    def forward(self, x):
        return self.linear_2(F.gelu(self.linear_1(x)))


class LlavaVision(nn.Module):
    """pixel values [B, 3, S, S] (CLIP-normalised) → image features [B, patches, text width]."""

    def __init__(self, config, text_width: int):
        super().__init__()
        import transformers

        with torch.device("meta"):
            self.tower = transformers.CLIPVisionModel(config)
            self.projector = Projector(config.hidden_size, text_width)
        inner = getattr(self.tower, "vision_model", self.tower)
        inner.post_layernorm = nn.Identity()  # only for the pooled CLS output, which LLaVA does not use
        self.image_size = config.image_size
        self.tokens = (config.image_size // config.patch_size) ** 2

    def expected_keys(self) -> list[str]:
        return [k for k in self.tower.state_dict() if not k.endswith("position_ids") and "post_layernorm" not in k]

    def load(self, tower: dict[str, torch.Tensor], projector: dict[str, torch.Tensor], device, dtype) -> None:
        self.tower.load_state_dict({k: v.to(device=device, dtype=dtype) for k, v in tower.items()}, strict=False, assign=True)
        self.projector.load_state_dict({k: v.to(device=device, dtype=dtype) for k, v in projector.items()}, assign=True)
        for name, _ in list(self.tower.named_buffers()):
            if name.endswith("position_ids"):  # non-persistent: rebuild it on the device
                owner = self.tower.get_submodule(name.rpartition(".")[0])
                owner.position_ids = torch.arange(self.tokens + 1, device=device).expand(1, -1)
        self.eval()

    @property
    def width(self) -> int:
        return self.projector.linear_2.out_features

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        states = self.tower(pixel_values=pixels).last_hidden_state  # the penultimate layer (see config)
        return self.projector(states[:, 1:])


def clip_pixels(image: torch.Tensor, size: int) -> torch.Tensor:
    """IMAGE [1, H, W, 3] in [0, 1] → CLIP pixel values [1, 3, size, size]: shortest side resized to
    `size` (bicubic, antialiased), center crop, CLIP mean/std — as LLaVA's CLIPImageProcessor does."""
    if not torch.is_tensor(image) or image.dim() != 4 or image.shape[-1] < 3:
        raise InputError("a start IMAGE [N, H, W, 3]", f"{getattr(image, 'shape', type(image).__name__)}",
                         "connect a LoadImage output as the image")
    x = image[:1, :, :, :3].float().permute(0, 3, 1, 2)
    h, w = x.shape[2:]
    if min(h, w) != size:  # resized in 0..255 units, as the processor does on the 8-bit image
        scale = size / min(h, w)
        x = F.interpolate(x * 255.0, size=(max(size, round(h * scale)), max(size, round(w * scale))), mode="bicubic",
                          antialias=True, align_corners=False).clamp(0, 255).round() / 255.0
        h, w = x.shape[2:]
    top, left = (h - size) // 2, (w - size) // 2
    x = x[:, :, top:top + size, left:left + size]
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std
