"""FramePack's start-image encoder (families/hunyuan_video/siglip.py) against transformers' SiglipVisionModel and
SiglipImageProcessor as FramePack's demo runs them (an 8-bit image, the PIL processor): the pixels equal
the processor's, the states the model's, from ComfyUI's single file (with or without the pooling head) and
lllyasviel's flux_redux_bfl folder; a CLIP vision file or a text model is refused by name."""

import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from hystream.errors import HyStreamError
from hystream.families.hunyuan_video.siglip import encode_start_image, load_siglip, siglip_pixels


def tiny_siglip(head: bool = True):
    from transformers import SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(4)
    return SiglipVisionModel(SiglipVisionConfig(hidden_size=128, intermediate_size=96, num_hidden_layers=2,
                                                num_attention_heads=2, image_size=32, patch_size=8,
                                                vision_use_head=head)).eval()


def save(model, layout: str, folder) -> str:
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    if layout in ("comfy", "comfy_no_head"):  # Flux Redux's sigclip file: vision_model.* names
        path = os.path.join(folder, "sigclip_vision_patch14_384.safetensors")
        save_file({"vision_model." + k.removeprefix("vision_model."): v for k, v in sd.items()
                   if layout == "comfy" or not k.startswith("head.")}, path)
        return path
    root = os.path.join(folder, "flux_redux_bfl")
    model.save_pretrained(os.path.join(root, "image_encoder"), safe_serialization=True)
    return root


def image(seed=0, h=45, w=70):
    return torch.rand(1, h, w, 3, generator=torch.Generator().manual_seed(seed))


def reference_pixels(img: torch.Tensor, size: int) -> torch.Tensor:
    """The PIL processor FramePack's demo used (transformers 4's SiglipImageProcessor; 5 names it
    SiglipImageProcessorPil: its default torchvision backend rounds some pixels one 8-bit level apart)."""
    try:
        from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil as Processor
    except ImportError:  # transformers 4: the PIL one is the only one
        from transformers import SiglipImageProcessor as Processor

    u8 = (img[0] * 255).round().to(torch.uint8).numpy()
    processor = Processor(size={"height": size, "width": size})
    return torch.from_numpy(np.asarray(processor(images=u8, return_tensors="np")["pixel_values"]))


@pytest.mark.parametrize("size", [32, 384])
def test_pixels_equal_siglip_image_processor(size):
    img = image(size)
    assert torch.allclose(siglip_pixels(img, size), reference_pixels(img, size), atol=1e-6)


@pytest.mark.parametrize("layout", ["comfy", "comfy_no_head", "lllyasviel"])
def test_states_equal_transformers(tmp_path, layout):
    model = tiny_siglip()
    img = image(1)
    with torch.no_grad():
        want = model(pixel_values=reference_pixels(img, 32)).last_hidden_state
    got = encode_start_image(save(model, layout, tmp_path), img, "cpu")
    assert got.shape == want.shape == (1, 16, 128)
    assert (got - want).abs().max().item() <= 1e-5


def test_a_clip_vision_file_is_refused(tmp_path):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    clip = CLIPVisionModel(CLIPVisionConfig(hidden_size=64, intermediate_size=64, num_hidden_layers=1,
                                            num_attention_heads=1, image_size=32, patch_size=8))
    path = str(tmp_path / "clip_vision_h.safetensors")
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, path)
    with pytest.raises(HyStreamError) as err:
        load_siglip(path)
    assert "sigclip_vision_patch14_384" in str(err.value)
