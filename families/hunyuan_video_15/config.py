"""HunyuanVideo 1.5's DiT hyper-parameters, read from tensor shapes (our names), never assumed.

What the weights cannot tell (DESIGN "Facts the weights do not tell", HunyuanVideo 1.5): head dim 128,
RoPE axes (16, 56, 56) over (t, h, w) with theta 256.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ...errors import StateDictError, UnsupportedVariantError
from ...models.shapes import shape_reader

HEAD_DIM = 128
ROPE_AXES = (16, 56, 56)
ROPE_THETA = 256.0


@dataclass(frozen=True)
class DiTConfig:
    in_channels: int = 65  # 32 latent + 32 image condition + 1 mask
    out_channels: int = 32
    hidden: int = 2048
    heads: int = 16
    depth: int = 54
    depth_refiner: int = 2
    mlp_hidden: int = 8192
    refiner_mlp_hidden: int = 8192
    text_dim: int = 3584  # Qwen2.5-VL-7B
    glyph_dim: int = 1472  # ByT5 (Glyph-SDXL-v2)
    glyph_hidden: int = 2048
    image_dim: int = 1152  # SigLIP
    patch: tuple[int, int, int] = (1, 1, 1)
    meanflow: bool = False  # the step-distilled model's second timestep embedder (time_r_in)
    qkv_bias: bool = True
    rope_axes: tuple[int, int, int] = ROPE_AXES
    rope_theta: float = ROPE_THETA

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def streamed_blocks(self) -> int:
        """Every block the streamer moves: the token refiner's and the dual-stream ones."""
        return self.depth_refiner + self.depth


def _count(shapes, pattern: str) -> int:
    rx = re.compile(pattern)
    ids = {int(m.group(1)) for k in shapes if (m := rx.match(k))}
    if ids and ids != set(range(len(ids))):
        missing = sorted(set(range(max(ids) + 1)) - ids)
        raise StateDictError(f"consecutive block numbers for {pattern.split('(')[0]}N",
                             f"blocks {missing} missing", "the file is incomplete; download it again")
    return len(ids)


def infer_dit_config(shapes: dict[str, tuple[int, ...]], describe: str = "the file") -> DiTConfig:
    shape = shape_reader(shapes, "a HunyuanVideo 1.5 DiT", describe,
                         "the file is incomplete or not a HunyuanVideo 1.5 transformer")
    w_in = shape("img_in.proj.weight")
    if len(w_in) != 5:
        raise UnsupportedVariantError("a 3D patch embedding [hidden, C, pt, ph, pw]", f"img_in.proj.weight of shape "
                                      f"{list(w_in)} in {describe}", "use a HunyuanVideo 1.5 video checkpoint")
    hidden, in_ch, patch = w_in[0], w_in[1], tuple(w_in[2:])
    out_ch = shape("final_layer.linear.weight")[0] // (patch[0] * patch[1] * patch[2])
    if in_ch != 2 * out_ch + 1:
        what = "a super-resolution model (98 input channels)" if in_ch == 98 else f"{in_ch} input channels"
        raise UnsupportedVariantError(f"a HunyuanVideo 1.5 T2V/I2V DiT ({2 * out_ch + 1} input channels: latent, "
                                      "image condition, mask)", f"{what} in {describe}",
                                      "HyStream runs the 480p/720p T2V and I2V models; the super-resolution models "
                                      "are not supported yet")
    head_dim = shape("double_blocks.0.img_attn_q_norm.weight")[0]
    if head_dim != sum(ROPE_AXES) or hidden % head_dim:
        raise UnsupportedVariantError(f"attention head dim {sum(ROPE_AXES)} (RoPE axes 16/56/56)",
                                      f"head dim {head_dim}, hidden {hidden} in {describe}",
                                      "this is not a HunyuanVideo 1.5 layout HyStream knows")
    depth = _count(shapes, r"double_blocks\.(\d+)\.")
    refiner = _count(shapes, r"txt_in\.individual_token_refiner\.blocks\.(\d+)\.")
    if not depth or not refiner:
        raise StateDictError("double_blocks.N and the token refiner's blocks",
                             f"{'no double_blocks' if not depth else 'no token refiner blocks'} in {describe}",
                             "the file is incomplete (a cut-short download or a partial save): download it again")
    if any(k.startswith("single_blocks.") for k in shapes):
        raise UnsupportedVariantError("a HunyuanVideo 1.5 DiT (dual-stream blocks only)",
                                      f"single-stream blocks in {describe}", "use a HunyuanVideo 1.5 checkpoint")
    return DiTConfig(
        in_channels=in_ch, out_channels=out_ch, hidden=hidden, heads=hidden // head_dim, depth=depth,
        depth_refiner=refiner, mlp_hidden=shape("double_blocks.0.img_mlp.fc1.weight")[0],
        refiner_mlp_hidden=shape("txt_in.individual_token_refiner.blocks.0.mlp.fc1.weight")[0],
        text_dim=shape("txt_in.input_embedder.weight")[1], glyph_dim=shape("byt5_in.fc1.weight")[1],
        glyph_hidden=shape("byt5_in.fc1.weight")[0], image_dim=shape("vision_in.proj.1.weight")[1],
        patch=patch, meanflow=any(k.startswith("time_r_in.") for k in shapes),
        qkv_bias="double_blocks.0.img_attn_qkv.bias" in shapes)
