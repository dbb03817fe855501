"""Load HunyuanVideo's VAE from both layouts users have, detected by key names (both ship as
`hunyuan_video_vae_bf16.safetensors`).

- diffusers-style (Tencent, kijai, diffusers `vae/` folders): `decoder.up_blocks.N.resnets.M…`,
  `decoder.mid_block.attentions.0.to_q…` — our module names.
- ldm-style (Comfy-Org repackaged): `decoder.up.N.block.M…` with the up levels numbered from the
  full-resolution end, `mid.block_1/attn_1/block_2`, `nin_shortcut`, attention q/k/v/proj_out as
  1×1×1 convolutions.
The VAE is small (~0.5 GB in fp32), so it is loaded whole onto the compute device.
"""

from __future__ import annotations

import re

import torch

from ...errors import UnsupportedVariantError, WrongModelError
from ...loaders.dtypes import compute_dtype, dominant_float_dtype
from ...loaders.key_check import check_tensors
from ...loaders.model_kind import describe_model
from ...loaders.tensor_source import TensorSource
from ...loaders.vae_loader import LoadedVAE
from .vae import HunyuanVideoVAE, VAEConfig

ANCHOR = "decoder.conv_in.conv.weight"


def _ldm_to_ours(name: str, levels: int) -> str:
    """One Comfy-Org (ldm) key → our (diffusers-style) key."""
    n = name
    n = re.sub(r"^(encoder|decoder)\.mid\.block_1\.", r"\1.mid_block.resnets.0.", n)
    n = re.sub(r"^(encoder|decoder)\.mid\.block_2\.", r"\1.mid_block.resnets.1.", n)
    for ldm, ours in (("norm", "group_norm"), ("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("proj_out", "to_out.0")):
        n = re.sub(rf"^(encoder|decoder)\.mid\.attn_1\.{ldm}\.", rf"\1.mid_block.attentions.0.{ours}.", n)
    n = re.sub(r"^encoder\.down\.(\d+)\.block\.(\d+)\.", r"encoder.down_blocks.\1.resnets.\2.", n)
    n = re.sub(r"^encoder\.down\.(\d+)\.downsample\.", r"encoder.down_blocks.\1.downsamplers.0.", n)
    m = re.match(r"^decoder\.up\.(\d+)\.(block\.(\d+)|upsample)\.(.*)", n)
    if m:
        level = levels - 1 - int(m.group(1))  # ldm numbers the up levels from the output end
        inner = f"resnets.{m.group(3)}" if m.group(3) is not None else "upsamplers.0"
        n = f"decoder.up_blocks.{level}.{inner}.{m.group(4)}"
    n = n.replace(".nin_shortcut.", ".conv_shortcut.")
    n = re.sub(r"^(encoder|decoder)\.norm_out\.", r"\1.conv_norm_out.", n)
    return n


def _config(shapes: dict[str, tuple[int, ...]], describe: str) -> VAEConfig:
    latent = shapes[ANCHOR][1]
    if latent != 16:
        raise UnsupportedVariantError("HunyuanVideo's VAE (16 latent channels)",
                                      f"a VAE with {latent} latent channels in {describe} (HunyuanVideo 1.5 / "
                                      "HunyuanImage use 32 or 64)", "use hunyuan_video_vae_bf16.safetensors")
    levels = sorted({int(m.group(1)) for k in shapes if (m := re.match(r"decoder\.up_blocks\.(\d+)\.", k))})
    channels = [shapes[f"decoder.up_blocks.{i}.resnets.0.conv2.conv.weight"][0] for i in levels]
    per_level = len({int(m.group(1)) for k in shapes if (m := re.match(r"decoder\.up_blocks\.0\.resnets\.(\d+)\.", k))})
    return VAEConfig(block_out_channels=tuple(reversed(channels)), layers_per_block=per_level - 1,
                     latent_channels=latent, in_channels=shapes["decoder.conv_out.conv.weight"][0])


def load_vae(source: TensorSource, path: str, family, device: str | torch.device = "cpu",
             dtype: torch.dtype | None = None) -> LoadedVAE:
    """HunyuanVideo's VAE from an open checkpoint (closed on failure; the handle owns it after)."""
    device = torch.device(device)
    try:
        keys = source.keys()
        hits = [k[: -len(ANCHOR)] for k in keys if k.endswith(ANCHOR)]
        prefix = min(hits, key=len) if hits else None
        if prefix is None:
            what = describe_model(keys)
            if any(k.endswith("decoder.conv_in.weight") for k in keys):
                what = "a 2D image VAE (Stable Diffusion / Flux style)"
            raise WrongModelError("HunyuanVideo's causal 3D VAE", f"{what} in {source.describe}",
                                  "pick hunyuan_video_vae_bf16.safetensors from models/vae")
        local = {k[len(prefix):]: k for k in keys if k.startswith(prefix)}
        outside = [k for k in keys if not k.startswith(prefix)]
        ldm = any(n.startswith(("decoder.up.", "encoder.down.", "decoder.mid.")) for n in local)
        if ldm:
            levels = 1 + max(int(m.group(1)) for n in local if (m := re.match(r"decoder\.up\.(\d+)\.", n)))
            local = {_ldm_to_ours(n, levels): k for n, k in local.items()}
        metas = {n: source.info(k) for n, k in local.items()}
        cfg = _config({n: m.shape for n, m in metas.items()}, source.describe)
        with torch.device("meta"):
            model = HunyuanVideoVAE(cfg)
        has_encoder = any(n.startswith("encoder.") for n in local)
        expected = {n: tuple(p.shape) for n, p in model.named_parameters()
                    if has_encoder or not n.startswith(("encoder.", "quant_conv."))}
        # ldm stores the attention projections as 1×1×1 convolutions
        found = {n: (m if m.shape[-3:] != (1, 1, 1) or ".attentions." not in n else type(m)(m.dtype, m.shape[:2]))
                 for n, m in metas.items()}
        check_tensors(expected, found, unused=outside, describe=source.describe, what="HunyuanVideo's VAE")
        if dtype is None:
            dtype = compute_dtype("auto", dominant_float_dtype(m.dtype for m in metas.values()), device)
        state = {n: source.read(k).reshape(expected[n]).to(device=device, dtype=dtype) for n, k in local.items()}
        model.load_state_dict(state, strict=False, assign=True)
        if not has_encoder:
            model.encoder = None
        model.eval()
        layout = "Comfy-Org repackaged (ldm names)" if ldm else "diffusers / Tencent names"
        return LoadedVAE(model, layout, str(path), has_encoder, family, source, device)
    except BaseException:
        source.close()
        raise
