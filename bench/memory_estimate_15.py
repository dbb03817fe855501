"""HunyuanVideo 1.5's stages at real sizes, without a GPU (`memory_estimate.py --family hunyuanvideo15`): the
memest fake-tensor estimator on HyStream's real 1.5 classes with the released shapes, bf16 files.

- DiT (streamed): the whole 54-block model on fake tensors, with an image-to-video run's context (the
  prompt's 1,000-token budget + 256 glyph tokens + 729 SigLIP tokens) and the 65 input channels; on the
  device = the non-block weights + a ring of 2 slots (a slot: the largest part of a block) + the activations (lean, token chunks as the planner sets).
- Text: Qwen2.5-VL-7B's 26 used layers streamed projection by projection through 2 slots from the bf16 file, ByT5 resident, the
  template's head + the prompt's budget; SigLIP (image-to-video) runs before it and is freed.
- VAE decode: the decoder's weights + the peak of one tile (chunked in time inside the tile). At 480p the
  tiles are 192 px (256 px would take 2.25 GiB); at 720p the default 256 px.
"""

from __future__ import annotations

import torch

GIB = 1024 ** 3
DT = torch.bfloat16
SIZES = [(121, 720, 1280), (121, 480, 848)]
TARGETS = {(121, 720, 1280): 3.0, (121, 480, 848): 2.0}
TILES = {(121, 720, 1280): 256, (121, 480, 848): 192}


def param_bytes(module) -> int:
    return sum(p.numel() for p in module.parameters()) * 2


def _fake_run(model, inputs: dict) -> int:
    from estimate import LiveBytes  # memest
    from torch.func import functional_call

    from hystream.memory_probe import fake_mode, flash_attention

    with flash_attention(), fake_mode():
        params = {n: torch.empty(p.shape, dtype=DT, device="cuda") for n, p in model.named_parameters()}
        params |= {n: torch.zeros(b.shape, dtype=b.dtype, device="cuda") for n, b in model.named_buffers()}
        made = {k: v() for k, v in inputs.items()}
        lb = LiveBytes(round_to=512)
        lb.track(list(params.values()))
        lb.track([t for t in made.values() if torch.is_tensor(t)])
        base = lb.cur
        with lb:
            out = functional_call(model, params, (), made)
        del out
    return lb.peak - base


def dit_stage(frames: int, height: int, width: int) -> dict:
    from hystream.families.hunyuan_video_15.family import HunyuanVideo15
    from hystream.families.hunyuan_video_15.memory import GLYPH_TOKENS, IMAGE_TOKENS, forward_peak_bytes
    from hystream.families.hunyuan_video_15.planning import MEMORY
    from hystream.families.hunyuan_video_15.prompt import TEXT_TOKENS

    cfg = MEMORY.dit_config()
    model = MEMORY.dit(cfg)
    from hystream.families import registry
    from hystream.planner import dit_weights

    units, fixed = dit_weights(registry.lookup("hunyuanvideo15"), "bf16", cfg)  # as streamed: double blocks in parts
    ring = 2 * max(units)
    shape = HunyuanVideo15.latent.shape(width, height, frames)
    context = TEXT_TOKENS + GLYPH_TOKENS + IMAGE_TOKENS
    model.lean, model.compute_dtype, model.device = True, DT, torch.device("cuda")
    tokens = model.image_tokens(shape)

    def tensor(*s, dtype=DT):
        return lambda: torch.empty(s, dtype=dtype, device="cuda")

    inputs = {"x": tensor(1, cfg.in_channels, *shape[2:]), "timestep": tensor(1, dtype=torch.float32),
              "txt": tensor(1, TEXT_TOKENS, cfg.text_dim), "glyph": tensor(1, GLYPH_TOKENS, cfg.glyph_dim),
              "image": tensor(1, IMAGE_TOKENS, cfg.image_dim)}  # masks None: every token valid (the longest context)
    act = _fake_run(model, inputs)
    planner_act = forward_peak_bytes(cfg, shape, context, DT, True, None, "cuda")
    return {"stage": "dit", "tokens": tokens + context, "weights_gib": (fixed + ring) / GIB, "activations_gib": act / GIB,
            "total_gib": (fixed + ring + act) / GIB, "planner_activations_gib": planner_act / GIB}


def text_stage() -> dict:
    from hystream.families.hunyuan_video_15.planning import MEMORY

    weights, act, settings = MEMORY.text_stage(fp8=False)
    return {"stage": "text encoder", "weights_gib": weights / GIB, "activations_gib": act / GIB,
            "total_gib": (weights + act) / GIB, "settings": settings}


def vision_stage() -> dict:
    """SigLIP so400m/14 at 384 px on the start image (fake tensors, bf16)."""
    from hystream.loaders.siglip_loader import infer_siglip_config
    from hystream.models.siglip import SiglipVision

    shapes = {"embeddings.patch_embedding.weight": (1152, 3, 14, 14),
              "embeddings.position_embedding.weight": (729, 1152),
              "encoder.layers.0.mlp.fc1.weight": (4304, 1152),
              **{f"encoder.layers.{i}.layer_norm1.weight": (1152,) for i in range(27)}}
    with torch.device("meta"):
        vision = SiglipVision(infer_siglip_config(shapes, {}, "SigLIP so400m"))
    act = _fake_run(vision.inner, {"pixel_values": lambda: torch.empty(1, 3, 384, 384, dtype=DT, device="cuda")})
    weights = param_bytes(vision.inner)
    return {"stage": "vision (SigLIP)", "weights_gib": weights / GIB, "activations_gib": act / GIB,
            "total_gib": (weights + act) / GIB}


def vae_stage(frames: int, height: int, width: int, tile_px: int) -> dict:
    from hystream.families.hunyuan_video_15.planning import MEMORY
    from hystream.vae.tiling import TileSpec

    decoder = MEMORY.vae_decoder()
    spec = TileSpec(tile_px, tile_px // 4)
    size_l, _, temporal_l, _ = spec.latent(16, 4)
    t = (frames - 1) // 4 + 1
    tile = (1, 32, min(t, temporal_l + 1), min(height // 16, size_l), min(width // 16, size_l))
    act = _fake_run(decoder, {"z": lambda: torch.empty(tile, dtype=DT, device="cuda")})
    weights = param_bytes(decoder)
    return {"stage": "vae decode", "tile_px": tile_px, "tile_latent": list(tile[2:]), "weights_gib": weights / GIB,
            "activations_gib": act / GIB, "total_gib": (weights + act) / GIB}


def rows(sizes) -> tuple[list[dict], bool]:
    text, vision = text_stage(), vision_stage()
    out, ok = [], True
    print(f"{'size':>16s} {'stage':>16s} {'weights':>9s} {'activ.':>9s} {'total':>9s} {'target':>7s}")
    for f, h, w in sizes:
        target = TARGETS.get((f, h, w))
        stages = [dit_stage(f, h, w), text, vision, vae_stage(f, h, w, TILES.get((f, h, w), 256))]
        for s in stages:
            print(f"{f:>4d}×{h:>4d}×{w:<5d} {s['stage']:>16s} {s['weights_gib']:9.3f} {s['activations_gib']:9.3f} "
                  f"{s['total_gib']:9.3f} {'≤ ' + format(target, 'g') if target else '':>7s}")
            ok = ok and (target is None or s["total_gib"] <= target)
        out.append({"size": f"{f}x{h}x{w}", "target_gib": target, "tile_px": stages[3]["tile_px"],
                    **{s["stage"].split(" ")[0] + "_gib": round(s["total_gib"], 4) for s in stages},
                    "dit_planner_activations_gib": round(stages[0]["planner_activations_gib"], 4),
                    "dit_activations_gib": round(stages[0]["activations_gib"], 4)})
    return out, ok
