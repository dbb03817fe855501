"""The DiT's hyper-parameters, read from tensor shapes (Tencent names), never assumed.

What the weights cannot tell (DESIGN "Facts the weights do not tell"): RoPE axes (16, 56, 56) over
(t, h, w) for head dim 128, theta 256.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ...errors import StateDictError, UnsupportedVariantError
from ...models.shapes import shape_reader

ROPE_AXES_128 = (16, 56, 56)
ROPE_THETA = 256.0


@dataclass(frozen=True)
class DiTConfig:
    in_channels: int = 16
    out_channels: int = 16
    hidden: int = 3072
    heads: int = 24
    depth_double: int = 20
    depth_single: int = 40
    depth_refiner: int = 2
    mlp_hidden: int = 12288
    single_mlp_hidden: int = 12288
    refiner_mlp_hidden: int = 12288
    text_dim: int = 4096
    pooled_dim: int = 768
    patch: tuple[int, int, int] = (1, 2, 2)
    guidance_embed: bool = True
    qkv_bias: bool = True
    rope_axes: tuple[int, int, int] = ROPE_AXES_128
    rope_theta: float = ROPE_THETA
    image_proj_dim: int = 0  # FramePack: the SigLIP width its image projection takes (0: not FramePack)

    @property
    def framepack(self) -> bool:
        """FramePack (and FramePack-F1): the history patch embedders and the SigLIP image projection."""
        return self.image_proj_dim > 0

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def image_condition(self) -> str | None:
        """How the start image enters, told by the patch embedding's input channels: "latent_concat"
        (HunyuanVideo-I2V: noisy latent + image latent + mask), "concat" (SkyReels-I2V: noisy latent + image
        latent), or None (T2V — and HunyuanVideo-I2V token replace, whose weights are T2V's shapes)."""
        extra = self.in_channels - self.out_channels
        return {0: None, self.out_channels: "concat", self.out_channels + 1: "latent_concat"}[extra]

    @property
    def streamed_blocks(self) -> int:
        """Every block the streamer moves: the token refiner's, the double and the single ones."""
        return self.depth_refiner + self.depth_double + self.depth_single


def _count(shapes, pattern: str) -> int:
    rx = re.compile(pattern)
    ids = {int(m.group(1)) for k in shapes if (m := rx.match(k))}
    if ids and ids != set(range(len(ids))):
        missing = sorted(set(range(max(ids) + 1)) - ids)
        raise StateDictError(f"consecutive block numbers for {pattern.split('(')[0]}N",
                             f"blocks {missing} missing", "the file is incomplete; download it again")
    return len(ids)


def infer_dit_config(shapes: dict[str, tuple[int, ...]], describe: str = "the file") -> DiTConfig:
    """Read the config from Tencent-named shapes. Raises for the variants we do not run."""
    shape = shape_reader(shapes, "a HunyuanVideo DiT", describe, "the file is incomplete or not a HunyuanVideo transformer")

    variants = [("byt5_in.", "HunyuanVideo 1.5 / HunyuanImage 2.1 (ByT5 glyph encoder)"),
                ("time_r_in.", "a MeanFlow-distilled HunyuanImage model"),
                ("cond_type_embedding.", "HunyuanVideo 1.5")]
    for prefix, what in variants:
        if any(k.startswith(prefix) for k in shapes):
            raise UnsupportedVariantError("a HunyuanVideo 1.0 transformer (text-to-video, HunyuanVideo-I2V or SkyReels-I2V)",
                                          f"{what} in {describe}",
                                          "pick a HunyuanVideo 1.0 DiT; this variant is not one HyStream runs (yet)")

    history, image_proj = (any(k.startswith(p) for k in shapes) for p in ("clean_x_embedder.", "image_projection."))
    if history != image_proj:
        have, lack = ("clean_x_embedder", "image_projection") if history else ("image_projection", "clean_x_embedder")
        raise StateDictError(f"FramePack's {lack} beside its {have}", f"only {have} in {describe}",
                             "the file is incomplete (a cut-short download or a partial save): download it again")
    w_in = shape("img_in.proj.weight")
    if len(w_in) != 5:
        raise UnsupportedVariantError("a 3D patch embedding [hidden, C, pt, ph, pw]",
                                      f"img_in.proj.weight of shape {list(w_in)} (a 2D image model such as HunyuanImage)",
                                      "use a HunyuanVideo text-to-video checkpoint")
    hidden, in_ch, patch = w_in[0], w_in[1], tuple(w_in[2:])
    out_w = shape("final_layer.linear.weight")
    out_ch = out_w[0] // math.prod(patch)
    if in_ch not in (out_ch, 2 * out_ch, 2 * out_ch + 1):
        raise UnsupportedVariantError(
            f"a HunyuanVideo DiT with {out_ch} (text-to-video, I2V token replace), {2 * out_ch} (SkyReels I2V) or "
            f"{2 * out_ch + 1} (HunyuanVideo-I2V latent concat) input channels",
            f"{in_ch} input and {out_ch} output channels in {describe}", "use a HunyuanVideo T2V or I2V checkpoint")
    if "vector_in.in_layer.weight" not in shapes:
        raise UnsupportedVariantError("a DiT with the CLIP pooled-vector input (vector_in)",
                                      f"none in {describe} (HunyuanImage 2.1 style)", "use a HunyuanVideo T2V checkpoint")

    head_dim = shape("double_blocks.0.img_attn_q_norm.weight")[0] if any(
        k.startswith("double_blocks.") for k in shapes) else shape("single_blocks.0.q_norm.weight")[0]
    if hidden % head_dim:
        raise StateDictError(f"a hidden size divisible by the head dim {head_dim}", f"hidden size {hidden}",
                             "the file mixes tensors of different models")
    if head_dim != sum(ROPE_AXES_128):
        raise UnsupportedVariantError("attention head dim 128 (RoPE axes 16/56/56)", f"head dim {head_dim} in {describe}",
                                      "this is not a HunyuanVideo checkpoint layout HyStream knows")
    depth_double = _count(shapes, r"double_blocks\.(\d+)\.")
    depth_single = _count(shapes, r"single_blocks\.(\d+)\.")
    depth_refiner = _count(shapes, r"txt_in\.individual_token_refiner\.blocks\.(\d+)\.")
    empty = [name for name, n in (("double_blocks", depth_double), ("single_blocks", depth_single),
                                  ("txt_in.individual_token_refiner.blocks", depth_refiner)) if n == 0]
    if empty:  # every HunyuanVideo DiT has all three kinds: a file without one is cut short, not a smaller model
        raise StateDictError("double_blocks.N, single_blocks.N and the token refiner's blocks",
                             f"no {' and no '.join(empty)} in {describe}",
                             "the file is incomplete (a cut-short download or a partial save): download it again")
    mlp_hidden = shape("double_blocks.0.img_mlp.fc1.weight")[0] if depth_double else 4 * hidden
    single_mlp = shape("single_blocks.0.linear1.weight")[0] - 3 * hidden if depth_single else mlp_hidden
    refiner_mlp = shape("txt_in.individual_token_refiner.blocks.0.mlp.fc1.weight")[0] if depth_refiner else 4 * hidden
    return DiTConfig(
        in_channels=in_ch, out_channels=out_ch, hidden=hidden, heads=hidden // head_dim,
        depth_double=depth_double, depth_single=depth_single, depth_refiner=depth_refiner,
        mlp_hidden=mlp_hidden, single_mlp_hidden=single_mlp, refiner_mlp_hidden=refiner_mlp,
        text_dim=shape("txt_in.input_embedder.weight")[1], pooled_dim=shape("vector_in.in_layer.weight")[1],
        patch=patch, guidance_embed=any(k.startswith("guidance_in.") for k in shapes),
        qkv_bias=("double_blocks.0.img_attn_qkv.bias" in shapes) if depth_double else True,
        image_proj_dim=shape("image_projection.up.weight")[1] if image_proj else 0,
    )

