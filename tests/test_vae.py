"""The causal 3D VAE: parity with diffusers in every layout, tiled decode/encode quality and frame
counts, memory bounded by the tile, automatic tiles, bad input."""

import logging
import math

import pytest
import torch

from hystream.errors import BudgetError, InputError, UnsupportedVariantError, WrongModelError
from hystream.families.hunyuan_video.vae import HunyuanVideoVAE, ResnetBlock, VAEConfig
from hystream.loading import load_vae
from hystream.memory_probe import LiveBytes
from hystream.vae import codec
from hystream.vae.planning import tile_peak_bytes
from hystream.vae.tiling import TileSpec, decode_tiled, encode_tiled, frame_span, tile_ranges
from tiny_vae import reference_vae, save_vae, stationary_latents

LAYOUTS = ["diffusers_file", "comfy", "diffusers_folder"]


@pytest.fixture(scope="module")
def ref():
    return reference_vae()


@pytest.fixture(scope="module")
def files(ref, tmp_path_factory):
    return {layout: save_vae(ref, layout, str(tmp_path_factory.mktemp(layout))) for layout in LAYOUTS}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_untiled_parity_with_diffusers(ref, files, layout):
    vae = load_vae(files[layout])
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1, 16, 3, 4, 6, generator=g)
    x = torch.rand(1, 3, 9, 32, 48, generator=g) * 2 - 1
    with torch.no_grad():
        want, got = ref.decode(z).sample, vae.model.decode(z)
        posterior, moments = ref.encode(x).latent_dist, vae.model.encode_moments(x)
    assert got.shape == (1, 3, 9, 32, 48)
    assert (got - want).abs().max().item() <= 1e-5 and want.abs().max().item() > 0.5
    assert (moments[:, :16] - posterior.mean).abs().max().item() <= 1e-5
    assert (moments[:, 16:].clamp(-30, 20) - posterior.logvar).abs().max().item() <= 1e-5
    expected = "ldm" if layout == "comfy" else "diffusers"
    assert expected in vae.layout


def test_encode_sample_matches_diffusers_draw(ref, files):
    """sample mode draws the same noise as diffusers with a seeded CPU generator."""
    vae = load_vae(files["comfy"])
    frames = torch.rand(9, 32, 48, 3, generator=torch.Generator().manual_seed(3))
    x = frames.permute(3, 0, 1, 2)[None] * 2 - 1
    with torch.no_grad():
        want = ref.encode(x).latent_dist.sample(generator=torch.Generator("cpu").manual_seed(11))
        mode = ref.encode(x).latent_dist.mode()
    got = encode_tiled(vae.model, frames, TileSpec(256, 64, 64, 16), sample=True, seed=11)
    got_mode = encode_tiled(vae.model, frames, TileSpec(256, 64, 64, 16))
    assert (got - want).abs().max().item() <= 1e-5
    assert (got_mode - mode).abs().max().item() <= 1e-5


class LocalVAE:
    """A stand-in decoder/encoder with no cross-tile effects (pointwise maps; causal frame mapping):
    tiling must reproduce its untiled output exactly, whatever the tile grid."""

    def __init__(self, cfg):
        g = torch.Generator().manual_seed(0)
        self.cfg, self.device, self.dtype, self.encoder = cfg, torch.device("cpu"), torch.float32, True
        self.w_dec = torch.randn(3, 16, generator=g) * 0.3
        self.w_enc = torch.randn(32, 3, generator=g) * 0.3

    def decode(self, z):
        x = torch.einsum("oc,bcthw->bothw", self.w_dec, z).tanh()
        x = torch.cat([x[:, :, :1], x[:, :, 1:].repeat_interleave(4, dim=2)], 2)
        return x.repeat_interleave(8, 3).repeat_interleave(8, 4)

    def encode_moments(self, x):
        x = torch.cat([x[:, :, :1], x[:, :, 4::4]], 2)[:, :, :, ::8, ::8]  # the last frame of each group
        return torch.einsum("oc,bcthw->bothw", self.w_enc, x)


@pytest.mark.parametrize("spec", [TileSpec(64, 16, 16, 4), TileSpec(64, 0, 16, 0), TileSpec(96, 32, 32, 8),
                                  TileSpec(128, 64, 8, 4)])
def test_tiling_machinery_is_exact_without_cross_tile_effects(ref, spec):
    vae = LocalVAE(VAEConfig())
    z = torch.randn(1, 16, 9, 16, 24)
    full = (vae.decode(z)[0].permute(1, 2, 3, 0) * 0.5 + 0.5).clamp(0, 1)
    assert (decode_tiled(vae, z, spec) - full).abs().max().item() <= 1e-6
    frames = torch.rand(33, 128, 192, 3)
    want = vae.encode_moments(frames.permute(3, 0, 1, 2)[None] * 2 - 1)[:, :16]
    assert (encode_tiled(vae, frames, spec) - want).abs().max().item() <= 1e-6


@pytest.fixture(scope="module")
def benign_vae():
    """The tiny VAE with small residual branches and no attention mix-in: like a trained VAE it is local
    and its normalisation statistics are the same in every tile of a homogeneous video, so what the
    quality test sees is the tiling (context at borders, blending), not a random net's chaos."""
    torch.manual_seed(0)
    vae = HunyuanVideoVAE(VAEConfig(block_out_channels=(32, 32, 32, 32), layers_per_block=1)).eval()
    with torch.no_grad():
        for attn in (vae.decoder.mid_block.attentions[0], vae.encoder.mid_block.attentions[0]):
            attn.to_out[0].weight.mul_(0.02)
            attn.to_out[0].bias.mul_(0.02)
        for m in vae.modules():
            if isinstance(m, ResnetBlock):
                m.conv2.conv.weight.mul_(0.02)
                m.conv2.conv.bias.mul_(0.02)
    return vae


def psnr(a, b) -> float:
    return 10 * math.log10(1.0 / ((a - b) ** 2).mean().item())


def seam_ratio(tiled, full, x_ranges, band_px=32):
    """Max error within ±band of the vertical seams over the max error elsewhere."""
    err = (tiled - full).abs().amax(-1)  # [F, H, W]
    near = torch.zeros_like(err, dtype=torch.bool)
    for a, _ in x_ranges[1:]:
        near[:, :, max(0, a * 8 - band_px):a * 8 + band_px] = True
    assert near.any() and (~near).any()
    return (err[near].max() / err[~near].max()).item()


def test_tiled_decode_quality_and_no_seams(benign_vae):
    """33 frames of 256×128 in 2 spatial × 2 temporal tiles (tile/overlap in the default proportion
    of a third): PSNR ≥ 40 dB against the untiled decode and errors at the seams no larger than
    elsewhere; the same check flags abutting tiles without blending."""
    z = stationary_latents(9, 16, 32)
    with torch.no_grad():
        full = (benign_vae.decode(z)[0].permute(1, 2, 3, 0) * 0.5 + 0.5).clamp(0, 1)
    spec = TileSpec(192, 64, 32, 8)
    tiled = decode_tiled(benign_vae, z, spec)
    quality = psnr(tiled, full)
    print(f"tiled vs untiled PSNR {quality:.2f} dB")
    assert quality >= 40.0
    assert seam_ratio(tiled, full, tile_ranges(32, 24, 8)) <= 2.5
    hard = decode_tiled(benign_vae, z, TileSpec(128, 0, 32, 8))  # abutting tiles: a visible seam
    assert seam_ratio(hard, full, tile_ranges(32, 16, 0)) > 5


@pytest.mark.parametrize("frames", [1, 5, 9, 33, 65])
def test_frame_counts(benign_vae, frames):
    t = (frames - 1) // 4 + 1
    z = torch.randn(1, 16, t, 4, 4)
    out = decode_tiled(benign_vae, z, TileSpec(256, 64, 64, 16))  # 65 frames span two temporal tiles
    assert out.shape == (frames, 32, 32, 3)
    assert frame_span(0, t)[1] == frames == 4 * (t - 1) + 1
    lat = encode_tiled(benign_vae, out, TileSpec(256, 64, 64, 16))
    assert lat.shape == (1, 16, t, 4, 4)


def test_peak_is_bounded_by_the_tile(benign_vae):
    spec = TileSpec(64, 16, 16, 4)
    peaks = []
    for t in (5, 17):  # 17 latent frames → 65 video frames: 4× longer
        z = torch.randn(1, 16, t, 8, 8)
        probe = LiveBytes()
        with probe:
            decode_tiled(benign_vae, z, spec)
        out_bytes = frame_span(0, t)[1] * 64 * 64 * 3 * 4  # the CPU output buffer grows with the video
        peaks.append(probe.peak - out_bytes)
    assert peaks[1] < 1.2 * peaks[0], peaks


def test_auto_tiles_fit_the_budget(benign_vae):
    z = torch.randn(1, 16, 9, 16, 16)
    budget = tile_peak_bytes(benign_vae, TileSpec(64, 16, 16, 4)) + 1
    probe = LiveBytes()
    with probe:
        out = codec.decode(benign_vae, z, TileSpec(0, 0, 0, 0), budget_bytes=budget)
    assert out.shape == (33, 128, 128, 3)
    assert probe.peak - out.numel() * 4 <= budget
    with pytest.raises(BudgetError, match="smallest VAE tile"):
        codec.decode(benign_vae, z, TileSpec(0, 0, 0, 0), budget_bytes=1000)


def test_encode_crops_to_4k_plus_1_and_multiples_of_16(benign_vae, caplog):
    frames = torch.rand(11, 70, 100, 3)
    with caplog.at_level(logging.WARNING, logger="hystream"):
        lat = codec.encode(benign_vae, frames, TileSpec(256, 64, 64, 16))
    assert lat.shape == (1, 16, 3, 64 // 8, 96 // 8)
    assert "cropped the video from 11 frames of 100x70 to 9 frames of 96x64" in caplog.text
    with pytest.raises(InputError, match="4k\\+1 frames"):
        codec.encode(benign_vae, frames, crop=False)


def test_bad_latents_and_tiles(benign_vae):
    with pytest.raises(InputError, match="16 channels"):
        decode_tiled(benign_vae, torch.randn(1, 4, 3, 8, 8), TileSpec())
    for spec, fragment in [(TileSpec(20, 0, 64, 16), "tile_size"), (TileSpec(256, 200, 64, 16), "tile_overlap"),
                           (TileSpec(256, 64, 6, 0), "temporal_tile"), (TileSpec(256, 64, 64, 48), "temporal_overlap"),
                           (TileSpec(256, 60, 64, 16), "tile_overlap")]:
        with pytest.raises(InputError, match=fragment):
            codec.decode(benign_vae, torch.randn(1, 16, 3, 8, 8), spec)


def test_wrong_files(tmp_path, tiny_dit_sd, ref):
    from safetensors.torch import save_file

    from tiny_dit import save_layout

    dit, _ = save_layout(tiny_dit_sd, "comfy", str(tmp_path / "dit"))
    with pytest.raises(WrongModelError, match="HunyuanVideo transformer"):
        load_vae(dit)
    sd_vae = tmp_path / "sdxl_vae.safetensors"
    save_file({"decoder.conv_in.weight": torch.zeros(4, 4, 3, 3), "encoder.conv_in.weight": torch.zeros(4, 3, 3, 3)},
              str(sd_vae))
    with pytest.raises(WrongModelError, match="2D image VAE"):
        load_vae(str(sd_vae))
    wide = {k: v for k, v in ref.state_dict().items()}
    wide["decoder.conv_in.conv.weight"] = torch.zeros(64, 32, 3, 3, 3)
    save_file(wide, str(tmp_path / "hunyuanvideo15_vae.safetensors"))
    with pytest.raises(UnsupportedVariantError, match="32 latent channels"):
        load_vae(str(tmp_path / "hunyuanvideo15_vae.safetensors"))


def test_decoder_only_file(tmp_path, ref):
    from safetensors.torch import save_file

    sd = {k: v for k, v in ref.state_dict().items() if k.startswith(("decoder.", "post_quant_conv."))}
    path = tmp_path / "vae_decoder_only.safetensors"
    save_file(sd, str(path))
    vae = load_vae(str(path))
    assert decode_tiled(vae.model, torch.randn(1, 16, 2, 4, 4), TileSpec()).shape == (5, 32, 32, 3)
    with pytest.raises(InputError, match="decoder-only"):
        encode_tiled(vae.model, torch.rand(5, 32, 32, 3), TileSpec())
