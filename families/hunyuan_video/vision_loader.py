"""Load LLaVA's vision tower + projector from the files users have: ComfyUI's
`clip_vision/llava_llama3_vision.safetensors` (`vision_model.*` + `multi_modal_projector.*`), and the
full LLaVA folders of xtuner / diffusers (`vision_tower.vision_model.*`, transformers 5's
`model.vision_tower.*`), whose Llama part the text encoder loader reads. Small (0.6 GB in fp16): loaded
whole onto the device for one image, then freed."""

from __future__ import annotations

import torch

from ...errors import WrongModelError
from ...loaders.checkpoint import open_checkpoint
from ...loaders.dtypes import compute_dtype, dominant_float_dtype
from ...loaders.key_check import check_tensors, key_prefix
from ...loaders.model_kind import describe_model
from .vision import LlavaVision, infer_vision_config

ANCHOR = "embeddings.patch_embedding.weight"
PROJECTOR = "multi_modal_projector.linear_1.weight"


def load_vision(path: str, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> LlavaVision:
    """The vision tower and projector of the LLaVA file or folder at `path`, on `device`."""
    device = torch.device(device)
    source = open_checkpoint(path, subfolders=("text_encoder",))
    try:
        keys = source.keys()
        tower, proj = key_prefix(keys, ANCHOR), key_prefix(keys, PROJECTOR)
        if tower is None or proj is None:
            what = describe_model(keys)
            raise WrongModelError(
                "LLaVA-Llama-3's vision tower with its projector (llava_llama3_vision.safetensors, or a full LLaVA folder)",
                f"{what}{' without the multimodal projector' if tower is not None else ''} in {source.describe}",
                "put llava_llama3_vision.safetensors in models/clip_vision and pick it (a plain CLIP vision model has "
                "no projector to the Llama width)")
        local = {k[len(tower):]: k for k in keys if k.startswith(tower) and "post_layernorm" not in k
                 and not k.endswith("position_ids")}
        metas = {n: source.info(k) for n, k in local.items()}
        config = infer_vision_config({n: m.shape for n, m in metas.items()}, source.describe)
        text_width = source.info(proj + "multi_modal_projector.linear_2.weight").shape[0]
        vision = LlavaVision(config, text_width)
        expected = vision.expected_keys()
        lead = "vision_model." if expected and expected[0].startswith("vision_model.") else ""  # transformers 4 / 5
        last = config.num_hidden_layers  # the final encoder layer is not run: its weights stay in the file
        wanted = {n: k for n, k in local.items() if not n.startswith(f"encoder.layers.{last}.")}
        shapes = dict(vision.tower.state_dict())
        check_tensors({k: tuple(shapes[k].shape) for k in expected},
                      {lead + n: metas[n] for n in wanted}, unused=[], describe=source.describe, what="the vision tower")
        dtype = dtype or compute_dtype("auto", dominant_float_dtype(m.dtype for m in metas.values()), device)
        projector = {n: source.read(proj + "multi_modal_projector." + n)
                     for n in ("linear_1.weight", "linear_1.bias", "linear_2.weight", "linear_2.bias")}
        vision.load({lead + n: source.read(k) for n, k in wanted.items()}, projector, device, dtype)
        return vision
    finally:
        source.close()


def has_vision_tower(path: str) -> bool:
    """Whether the file or folder at `path` (e.g. a full LLaVA folder) holds the vision tower and projector."""
    source = open_checkpoint(path, subfolders=("text_encoder",))
    try:
        keys = source.keys()
        return key_prefix(keys, ANCHOR) is not None and key_prefix(keys, PROJECTOR) is not None
    finally:
        source.close()
