"""Load HunyuanVideo 1.5's VAE from the layouts users have, told apart by key names (any prefix):

- Tencent / Comfy-Org (`vae/hunyuanvideo15_vae_fp16.safetensors`, Tencent's `vae/diffusion_pytorch_model.safetensors`):
  `decoder.up.N.block.M…`, `mid.block_1/attn_1/block_2`, `.downsample` / `.upsample` — our module names;
- diffusers `vae/` folders (`AutoencoderKLHunyuanVideo15`): `decoder.up_blocks.N.resnets.M…`,
  `mid_block.resnets.0/attentions.0/resnets.1`, `to_q/to_k/to_v`, `downsamplers.0` / `upsamplers.0`.
Both number the levels alike (the decoder's from the latent end). The config is read from the shapes; a
decoder-only file gives a model without encoder. The VAE is small (2.5 GB in fp16), loaded whole.
"""

from __future__ import annotations

import re

import torch

from ...errors import StateDictError, UnsupportedVariantError, WrongModelError
from ...loaders.dtypes import compute_dtype, dominant_float_dtype
from ...loaders.key_check import check_tensors, key_prefix
from ...loaders.model_kind import describe_model
from ...loaders.tensor_source import TensorSource
from ...loaders.vae_loader import LoadedVAE
from .vae import HunyuanVideo15VAE, VAEConfig

ANCHOR = "decoder.conv_in.conv.weight"  # [width, latent channels, 3, 3, 3] in both layouts
LATENT_CHANNELS = 32
WHAT = "HunyuanVideo 1.5's causal 3D VAE"
PICK = "pick hunyuanvideo15_vae_fp16.safetensors from models/vae"
LAYOUTS = ("Tencent / Comfy-Org names", "diffusers names (AutoencoderKLHunyuanVideo15)")

_DIFFUSERS_TO_OURS = [
    (r"^encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.", r"encoder.down.\1.block.\2."),
    (r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample."),
    (r"^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.", r"decoder.up.\1.block.\2."),
    (r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.", r"decoder.up.\1.upsample."),
    (r"^(encoder|decoder)\.mid_block\.resnets\.0\.", r"\1.mid.block_1."),
    (r"^(encoder|decoder)\.mid_block\.resnets\.1\.", r"\1.mid.block_2."),
    (r"^(encoder|decoder)\.mid_block\.attentions\.0\.to_([qkv])\.", r"\1.mid.attn_1.\2."),
    (r"^(encoder|decoder)\.mid_block\.attentions\.0\.", r"\1.mid.attn_1."),
]
_DIFFUSERS_MARKS = ("decoder.up_blocks.", "decoder.mid_block.", "encoder.down_blocks.", "encoder.mid_block.")


def claims_vae(keys, shapes) -> bool:
    """The 1.5 VAE by its keys: a causal decoder input convolution taking 32 latent channels (both layouts
    name it `decoder.conv_in.conv.weight`). `shapes(key)` reads a tensor's shape."""
    prefix = key_prefix(keys, ANCHOR)
    # 1.0's VAE (16 channels) has a post_quant_conv before its decoder; 1.5's decoder takes the latent directly
    return prefix is not None and tuple(shapes(prefix + ANCHOR))[1] == LATENT_CHANNELS and \
        not any("post_quant_conv." in k for k in keys)


def diffusers_to_ours(name: str) -> str:
    for pattern, repl in _DIFFUSERS_TO_OURS:
        name = re.sub(pattern, repl, name)
    return name


def _refuse_other_vaes(keys, latent: int | None, describe: str) -> None:
    if latent is None:
        what = describe_model(keys)
        if any(k.endswith("decoder.conv_in.weight") for k in keys):
            what = "a 2D image VAE (Stable Diffusion / Flux / HunyuanImage style)"
        raise WrongModelError(WHAT, f"{what} in {describe}", PICK)
    if latent == 16:
        raise WrongModelError(WHAT + " (32 latent channels)", f"HunyuanVideo 1.0's VAE (16 latent channels) in {describe}",
                              "HunyuanVideo 1.0's VAE: use it with a 1.0 DiT, or pick "
                              "hunyuanvideo15_vae_fp16.safetensors")
    if latent != LATENT_CHANNELS:
        raise UnsupportedVariantError(WHAT + " (32 latent channels)",
                                      f"a causal 3D VAE with {latent} latent channels in {describe}", PICK)


def read_config(shapes: dict[str, tuple[int, ...]], describe: str) -> VAEConfig:
    """The config from our-named shapes: widths per level, resnets per level, which levels resample
    (an upsampler's convolution makes 4× its output width for space, 8× for space and time)."""
    try:
        levels = 1 + max(int(m.group(1)) for k in shapes if (m := re.match(r"decoder\.up\.(\d+)\.", k)))
        widths = [shapes[f"decoder.up.{i}.block.0.conv1.conv.weight"][0] for i in range(levels)]
        resnets = 1 + max(int(m.group(1)) for k in shapes if (m := re.match(r"decoder\.up\.0\.block\.(\d+)\.", k)))
        factors = [shapes[f"decoder.up.{i}.upsample.conv.conv.weight"][0] // widths[i + 1]
                   for i in range(levels - 1) if f"decoder.up.{i}.upsample.conv.conv.weight" in shapes]
        out_channels = shapes["decoder.conv_out.conv.weight"][0]
    except (KeyError, ValueError, IndexError) as e:
        raise StateDictError(f"the decoder tensors of {WHAT}", f"a decoder without {e} in {describe}",
                             "the file is incomplete; download it again") from None
    if any(f not in (4, 8) for f in factors) or resnets < 2:
        raise StateDictError(f"{WHAT}'s resamplers (4× or 8× channels) and resnets", f"factors {factors}, "
                             f"{resnets} resnets per level in {describe}", "use an official release file")
    return VAEConfig(block_out_channels=tuple(reversed(widths)), layers_per_block=resnets - 1,
                     latent_channels=shapes[ANCHOR][1], in_channels=out_channels,
                     space_compression=2 ** len(factors), time_compression=2 ** factors.count(8))


def load_vae(source: TensorSource, path: str, family, device: str | torch.device = "cpu",
             dtype: torch.dtype | None = None) -> LoadedVAE:
    """HunyuanVideo 1.5's VAE from an open checkpoint (closed on failure; the handle owns it after)."""
    device = torch.device(device)
    try:
        keys = source.keys()
        prefix = key_prefix(keys, ANCHOR)
        latent = None if prefix is None else tuple(source.info(prefix + ANCHOR).shape)[1]
        _refuse_other_vaes(keys, latent, source.describe)
        local = {k[len(prefix):]: k for k in keys if k.startswith(prefix)}
        outside = [k for k in keys if not k.startswith(prefix)]
        diffusers = any(n.startswith(_DIFFUSERS_MARKS) for n in local)
        if diffusers:
            local = {diffusers_to_ours(n): k for n, k in local.items()}
        metas = {n: source.info(k) for n, k in local.items()}
        cfg = read_config({n: tuple(m.shape) for n, m in metas.items()}, source.describe)
        with torch.device("meta"):
            model = HunyuanVideo15VAE(cfg)
        has_encoder = any(n.startswith("encoder.") for n in local)
        expected = {n: tuple(p.shape) for n, p in model.named_parameters() if has_encoder or not n.startswith("encoder.")}
        check_tensors(expected, metas, unused=outside, describe=source.describe, what=WHAT)
        if dtype is None:
            dtype = compute_dtype("auto", dominant_float_dtype(m.dtype for m in metas.values()), device)
        state = {n: source.read(k).to(device=device, dtype=dtype) for n, k in local.items()}
        if not has_encoder:
            model.encoder = None
        model.load_state_dict(state, strict=True, assign=True)
        model.eval()
        return LoadedVAE(model, LAYOUTS[diffusers], str(path), has_encoder, family, source, device)
    except BaseException:
        source.close()
        raise
