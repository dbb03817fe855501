"""The start image's SigLIP view, which HunyuanVideo 1.5 image-to-video and FramePack condition on: SigLIP
(FLUX.1-Redux's so400m-patch14-384, 27 layers, width 1152) turns the start image into the DiT's `image_embeds`
[1, 729, 1152] — `last_hidden_state`, post_layernorm applied; the pooling head is never built.

The pixels are diffusers' HunyuanVideo15ImageToVideoPipeline's: the start image is fitted to the video size
(scaled to cover it with Lanczos, centre-cropped: `VideoProcessor.resize(..., resize_mode="crop")` on the PIL
image), then squashed to the encoder's square with antialiased bicubic (SiglipImageProcessor), /255, mean/std
0.5. Both resizes are PIL's separable filters (torchvision's uint8 kernels follow them), rebuilt here in torch
with the 8-bit rounding PIL does after each pass: the reference gets an 8-bit picture at every step.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn

from ..errors import InputError, NonFiniteError

SIGLIP_MEAN = SIGLIP_STD = 0.5  # FLUX.1-Redux's feature_extractor (preprocessor_config.json)


# -- PIL's resampling (Imaging/Resample.c) in torch -------------------------------------------------------
def _lanczos(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x.abs() < 3, torch.sinc(x) * torch.sinc(x / 3), torch.zeros_like(x))


def _bicubic(x: torch.Tensor, a: float = -0.5) -> torch.Tensor:  # PIL's (and torchvision's) a = -0.5
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


FILTERS = {"lanczos": (_lanczos, 3.0), "bicubic": (_bicubic, 2.0)}  # kernel, support (input pixels at scale 1)


def _weights(size_in: int, size_out: int, kernel: str) -> torch.Tensor:
    """PIL's `precompute_coeffs` as a banded matrix [out, in]: each output pixel's normalised kernel weights,
    the kernel stretched by the downscale factor (that is the antialiasing)."""
    fn, support = FILTERS[kernel]
    scale = size_in / size_out
    stretch = max(scale, 1.0)
    support *= stretch
    center = (torch.arange(size_out, dtype=torch.float64) + 0.5) * scale
    lo = torch.trunc(center - support + 0.5).clamp(min=0)
    hi = torch.trunc(center + support + 0.5).clamp(max=size_in)
    index = lo[:, None] + torch.arange(math.ceil(support) * 2 + 1, dtype=torch.float64)
    weight = fn((index - center[:, None] + 0.5) / stretch) * (index < hi[:, None])
    weight = weight / weight.sum(1, keepdim=True)
    matrix = torch.zeros(size_out, size_in, dtype=torch.float64)
    return matrix.scatter_add_(1, index.clamp(max=size_in - 1).long(), weight)


def _resize_axis(x: torch.Tensor, dim: int, size: int, kernel: str) -> torch.Tensor:
    rows = x.movedim(dim, 0)
    out = _weights(rows.shape[0], size, kernel).to(rows.dtype) @ rows.reshape(rows.shape[0], -1)  # BLAS: fast
    out = out.view(size, *rows.shape[1:]).movedim(0, dim)
    return torch.floor(out + 0.5).clamp(0, 255)  # PIL stores 8 bits after each pass


def pil_resize(levels: torch.Tensor, height: int, width: int, kernel: str) -> torch.Tensor:
    """[C, H, W] in 0..255 levels → [C, height, width], as PIL's `Image.resize` does on an 8-bit RGB image:
    horizontal pass, then vertical, each skipped when its size does not change (Pillow ≤ 12 and torchvision;
    Pillow 13 runs some downscales of tall images vertically first, which moves clipped edges by a level or two)."""
    if levels.shape[-1] != width:
        levels = _resize_axis(levels, -1, width, kernel)
    if levels.shape[-2] != height:
        levels = _resize_axis(levels, -2, height, kernel)
    return levels


# -- the start image -----------------------------------------------------------------------------------
def _first_frame_levels(image) -> torch.Tensor:
    """IMAGE [N, H, W, C≥3] in [0, 1] → the first frame's RGB [3, H, W] in 8-bit levels (the reference's PIL image)."""
    if not torch.is_tensor(image) or image.dim() != 4 or image.shape[-1] < 3 or min(image.shape[:3]) < 1:
        raise InputError("a start IMAGE [N, H, W, 3] with values in [0, 1]",
                         f"{tuple(image.shape) if torch.is_tensor(image) else type(image).__name__}",
                         "connect a LoadImage (or any IMAGE) output as the start image")
    rgb = image[0, :, :, :3].detach().to("cpu", torch.float32).permute(2, 0, 1)
    return (rgb * 255).round().clamp(0, 255)


def _check_side(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InputError(f"the video {name} as a positive number of pixels", repr(value), f"set the {name} of the video")
    return int(value)


def fit_levels(image, width: int, height: int) -> torch.Tensor:
    """The start image scaled to cover width × height (Lanczos) and centre-cropped: [3, height, width] in 8-bit
    levels — diffusers' `VideoProcessor._resize_and_crop`, integer arithmetic included."""
    width, height = _check_side("width", width), _check_side("height", height)
    levels = _first_frame_levels(image)
    h, w = levels.shape[1:]
    src_w = width if width / height > w / h else w * height // h
    src_h = height if width / height <= w / h else h * width // w
    levels = pil_resize(levels, src_h, src_w, "lanczos")
    top, left = src_h // 2 - height // 2, src_w // 2 - width // 2  # PIL pastes it at (width//2 - src_w//2, …)
    return levels[:, top:top + height, left:left + width]


def fit_to_video(image, width: int, height: int) -> torch.Tensor:
    """IMAGE → the first frame fitted to the video as an IMAGE [1, height, width, 3] in [0, 1] (the picture the
    reference pipeline also gives its VAE)."""
    return (fit_levels(image, width, height) / 255).permute(1, 2, 0)[None].contiguous()


def siglip_pixels(levels: torch.Tensor, size: int) -> torch.Tensor:
    """[3, H, W] in 8-bit levels → pixel values [1, 3, size, size]: squashed (bicubic, antialiased), /255,
    (x - 0.5) / 0.5 — SiglipImageProcessor with FLUX.1-Redux's settings."""
    levels = pil_resize(levels, size, size, "bicubic")
    return ((levels / 255 - SIGLIP_MEAN) / SIGLIP_STD)[None]


# -- the encoder ---------------------------------------------------------------------------------------
class SiglipVision(nn.Module):
    """transformers' SiglipVisionModel without its pooling head; config from the loader (vision_loader.py)."""

    def __init__(self, config):
        super().__init__()
        import transformers

        config.vision_use_head = False  # the head pools one vector; the DiT takes every token
        with torch.device("meta"):
            self.tower = transformers.SiglipVisionModel(config)
        self.image_size = config.image_size
        self.grid = config.image_size // config.patch_size
        self.tokens = self.grid * self.grid

    @property
    def inner(self) -> nn.Module:
        """The transformer itself: transformers 4 nests it as `.vision_model`, 5 does not."""
        return getattr(self.tower, "vision_model", self.tower)

    @property
    def lead(self) -> str:
        """The prefix of the model's own tensor names: "vision_model." in transformers 4, "" in 5."""
        return "vision_model." if self.inner is not self.tower else ""

    @property
    def width(self) -> int:
        return self.tower.config.hidden_size

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in self.tower.state_dict().items()}

    def load(self, tensors: dict[str, torch.Tensor], device, dtype) -> None:
        self.tower.load_state_dict({k: v.to(device=device, dtype=dtype) for k, v in tensors.items()}, assign=True)
        embeddings = self.inner.embeddings  # position_ids is not stored: rebuild it on the device
        embeddings.position_ids = torch.arange(self.tokens, device=device).expand(1, -1)
        self.eval()

    @property
    def device(self) -> torch.device:
        return self.inner.post_layernorm.weight.device

    @torch.no_grad()
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixel values [B, 3, S, S] → last_hidden_state [B, tokens, width] (post_layernorm applied)."""
        return self.tower(pixel_values=pixels.to(self.device)).last_hidden_state

    def encode(self, image, width: int, height: int) -> torch.Tensor:
        """A ComfyUI IMAGE (its first frame) for a width × height video → image_embeds [1, tokens, width], fp32, CPU."""
        states = self(siglip_pixels(fit_levels(image, width, height), self.image_size)).float().cpu()
        if not torch.isfinite(states).all():
            raise NonFiniteError("finite SigLIP image states", f"NaN/Inf with {self.tower.dtype} weights",
                                 "load the vision model in bf16 or fp32 (dtype=torch.bfloat16)")
        return states
