"""HunyuanVideo 1.5's causal VAE: both file layouts load through the generic loader and decode / encode as
diffusers' AutoencoderKLHunyuanVideo15 does; chunked decoding equals the whole clip; the tiler blends it;
other VAEs are refused with the file named."""

import os

import pytest
import torch

from hystream.errors import HyStreamError
from hystream.families.hunyuan_video_15.demo_vae import TINY_VAE, write_vae
from hystream.loading import load_vae
from hystream.vae.codec import decode, encode
from hystream.vae.tiling import TileSpec

diffusers = pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("vae15")
    return {"diffusers": write_vae(str(root / "d"), "diffusers", dtype=torch.float32, residual_scale=0.5),
            "comfy": write_vae(str(root / "c"), "comfy", dtype=torch.float32, residual_scale=0.5),
            "decoder_only": write_vae(str(root / "o"), "comfy", dtype=torch.float32, residual_scale=0.5,
                                      decoder_only=True)}


@pytest.fixture(scope="module")
def reference(folders):
    from diffusers import AutoencoderKLHunyuanVideo15

    return AutoencoderKLHunyuanVideo15.from_pretrained(folders["diffusers"], subfolder="vae").eval()


@pytest.mark.parametrize("layout", ["comfy", "diffusers"])
@pytest.mark.parametrize(("t", "h", "w"), [(1, 2, 3), (3, 3, 2), (7, 2, 2)])
def test_decode_matches_diffusers(folders, reference, layout, t, h, w):
    vae = load_vae(folders[layout], dtype=torch.float32)
    z = torch.randn(1, 32, t, h, w, generator=torch.Generator().manual_seed(t))
    with torch.inference_mode():
        want = reference.decode(z).sample
        got = vae.model.decode(z)
    assert got.shape == want.shape == (1, 3, 4 * (t - 1) + 1, 16 * h, 16 * w)
    assert (got - want).abs().max() <= 1e-4 * want.abs().max()


@pytest.mark.parametrize(("frames", "h", "w"), [(1, 32, 48), (5, 48, 32), (13, 32, 32)])
def test_encode_matches_diffusers(folders, reference, frames, h, w):
    vae = load_vae(folders["diffusers"], dtype=torch.float32)
    x = torch.rand(1, 3, frames, h, w, generator=torch.Generator().manual_seed(frames)) * 2 - 1
    with torch.inference_mode():
        dist = reference.encode(x).latent_dist
        got = vae.model.encode_moments(x)
    assert (got[:, :32] - dist.mean).abs().max() <= 1e-4 * dist.mean.abs().max()
    assert (got[:, 32:].clamp(-30, 20) - dist.logvar).abs().max() <= 1e-4 * dist.logvar.abs().max()


def test_chunked_in_time_equals_the_whole_clip(folders):
    vae = load_vae(folders["comfy"], dtype=torch.float32)
    z = torch.randn(1, 32, 5, 2, 3, generator=torch.Generator().manual_seed(1))
    x = torch.rand(1, 3, 13, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.inference_mode():
        chunked, enc_chunked = vae.model.decode(z), vae.model.encode_moments(x)
        vae.model.decoder.chunk_frames = vae.model.encoder.chunk_frames = None
        whole, enc_whole = vae.model.decode(z), vae.model.encode_moments(x)
    assert (chunked - whole).abs().max() <= 1e-5 * whole.abs().max()
    assert (enc_chunked - enc_whole).abs().max() <= 1e-5 * enc_whole.abs().max()


def test_pieces_do_not_change_the_decode(folders):
    """The decoder streams each level's output in pieces of at most piece_pixels positions: small pieces
    (many per frame) give what large ones give."""
    vae = load_vae(folders["comfy"], dtype=torch.float32)
    z = torch.randn(1, 32, 3, 3, 4, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        big = vae.model.decode(z)
        vae.model.decoder.piece_pixels = 16 * 16
        small = vae.model.decode(z)
    assert (small - big).abs().max() <= 1e-5 * big.abs().max()


def test_the_tiler_decodes_and_encodes_the_1_5_geometry(folders, reference):
    vae = load_vae(folders["comfy"], dtype=torch.float32)
    z = torch.randn(1, 32, 3, 4, 6, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        want = reference.decode(z).sample[0].permute(1, 2, 3, 0).mul(0.5).add(0.5).clamp(0, 1)
        one_tile = decode(vae.model, z, TileSpec(128, 0, 64, 0))
        tiled = decode(vae.model, z, TileSpec(64, 16, 64, 0))
    assert one_tile.shape == (9, 64, 96, 3)
    assert (one_tile - want).abs().max() <= 1e-4
    assert torch.isfinite(tiled).all() and (tiled - want).abs().mean() < 0.08  # blended: close, not equal
    with torch.inference_mode():
        latents = encode(vae.model, one_tile, TileSpec(128, 0, 64, 0))
    assert latents.shape == (1, 32, 3, 4, 6)


def test_a_decoder_only_file_decodes_and_refuses_to_encode(folders, reference):
    vae = load_vae(folders["decoder_only"], dtype=torch.float32)
    assert not vae.has_encoder
    z = torch.randn(1, 32, 2, 2, 2, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        assert (vae.model.decode(z) - reference.decode(z).sample).abs().max() <= 1e-4 * 3
    with pytest.raises(HyStreamError, match="decoder-only"), torch.inference_mode():
        encode(vae.model, torch.rand(5, 32, 32, 3))


def test_other_vaes_are_refused_naming_what_was_found(tmp_path):
    from safetensors.torch import save_file

    from hystream.families.hunyuan_video.demo import build_models

    files = build_models(str(tmp_path / "hv10"))
    vae10 = load_vae(files["vae"])  # a 1.0 VAE loads as 1.0's, with 16 channels
    assert vae10.cfg.latent_channels == 16
    z32 = torch.randn(1, 32, 2, 2, 2)
    with pytest.raises(HyStreamError, match="32 channels|16 channels|LATENT"), torch.inference_mode():
        decode(vae10.model, z32)
    image_vae = str(tmp_path / "sd_vae.safetensors")
    save_file({"decoder.conv_in.weight": torch.zeros(8, 4, 3, 3), "encoder.conv_in.weight": torch.zeros(8, 3, 3, 3)},
              image_vae)
    with pytest.raises(HyStreamError) as e:
        load_vae(image_vae)
    assert "sd_vae.safetensors" in str(e.value)
    truncated = str(tmp_path / "truncated.safetensors")
    from safetensors.torch import load_file

    sd = load_file(folders_path := write_vae(str(tmp_path / "t"), "comfy"))
    del sd["decoder.up.1.block.0.conv1.conv.weight"]
    save_file(sd, truncated)
    with pytest.raises(HyStreamError) as e:
        load_vae(truncated)
    assert "truncated.safetensors" in str(e.value) and os.path.exists(folders_path)
    assert TINY_VAE.latent_channels == 32


@pytest.mark.parametrize("what", ["decode", "encode"])
def test_the_tile_planner_measures_the_1_5_geometry(folders, what):
    """The automatic tiles' memory model probes a tile of 16-pixel cells (1.0's are 8): its prediction for a
    real tile covers that tile's measured peak without overshooting it by much."""
    from hystream.memory_probe import fake_peak_bytes
    from hystream.vae.planning import MARGIN, tile_peak_bytes

    model = load_vae(folders["comfy"], dtype=torch.float32).model
    spec = TileSpec(128, 0, 16, 0)  # 8 × 8 latent cells, 17 frames (5 latent frames)
    predicted = tile_peak_bytes(model, spec, what) / MARGIN
    if what == "decode":
        measured = fake_peak_bytes(model.decode, ((1, 32, 5, 8, 8), torch.float32, torch.device("cpu")))
    else:
        measured = fake_peak_bytes(model.encode_moments, ((1, 3, 17, 128, 128), torch.float32, torch.device("cpu")))
    assert 0.9 * measured <= predicted <= 2 * measured, (predicted, measured)
