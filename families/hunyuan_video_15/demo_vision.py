"""A tiny random SigLIP vision model in the layouts users have, for the tests and the demo: ComfyUI's
`clip_vision/sigclip_vision_patch14_384.safetensors` (transformers' names under `vision_model.`, the pooling head
included, fp16) and an HF `SiglipVisionModel` folder (diffusers' `image_encoder/`: config.json + safetensors).
Noise, not trained weights: it exercises the real key layouts and code paths in well under a second."""

from __future__ import annotations

import os

import torch

from ...loaders.siglip_loader import FILE, HEAD_DIM

# width two heads of the real 72, 2 layers, 2 × 2 patches of 14: the real architecture at toy size
TINY_SIGLIP = {"hidden_size": 2 * HEAD_DIM, "intermediate_size": 4 * HEAD_DIM, "num_hidden_layers": 2,
               "num_attention_heads": 2, "image_size": 28, "patch_size": 14, "hidden_act": "gelu_pytorch_tanh",
               "layer_norm_eps": 1e-6}


def tiny_siglip(seed: int = 0, **overrides):
    """A random transformers SiglipVisionModel (head included, as released), fp32 with fp16-exact weights, so
    the fp16 file and this model are the same numbers. Norms near 1, matrices ~ 1/sqrt(fan-in)."""
    import transformers

    model = transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**(TINY_SIGLIP | overrides))).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                value = 1 + 0.1 * torch.randn(p.shape, generator=g)
            elif p.dim() == 1 or "position_embedding" in name or "probe" in name:
                value = 0.05 * torch.randn(p.shape, generator=g) * (20 if "position" in name else 1)
            else:
                value = torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5
            p.copy_(value.half().float())
    return model


def comfy_state_dict(model, dtype: torch.dtype = torch.float16, prefix: str = "") -> dict[str, torch.Tensor]:
    """The model's tensors as ComfyUI's file stores them: `vision_model.*` (head included), no position_ids."""
    return {prefix + ("" if k.startswith("vision_model.") else "vision_model.") + k: v.detach().to(dtype).contiguous()
            for k, v in model.state_dict().items() if not k.endswith("position_ids")}  # transformers 5 drops the lead


def write_comfy_siglip(model, folder: str, name: str = FILE, dtype: torch.dtype = torch.float16,
                       prefix: str = "") -> str:
    from safetensors.torch import save_file

    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    save_file(comfy_state_dict(model, dtype, prefix), path)
    return path


def write_hf_siglip(model, folder: str) -> str:
    """An HF SiglipVisionModel folder (config.json + model.safetensors), as diffusers saves `image_encoder/`."""
    model.save_pretrained(folder)
    return folder


def write_demo_siglip(folder: str, seed: int = 0) -> str:
    """The demo's clip_vision file: `folder`/sigclip_vision_patch14_384.safetensors (tiny, random)."""
    return write_comfy_siglip(tiny_siglip(seed), folder)
