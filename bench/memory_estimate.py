"""Peak device memory of each stage at real sizes, without a GPU: the fake-tensor estimator
(shared/tools/memest: LiveBytes + the O(N) flash-style attention stub, validated against real
allocations) run on HyStream's real model classes with the real shapes, bf16.

- DiT (streamed): the full 62-block model runs on fake tensors; activations = its peak minus the
  weights it was given; on the device = non-block weights + a ring of 2 streamed blocks + activations.
- Text encoder: LLaVA-Llama-3-8B's 30 used layers (ring of 2, fp16) + CLIP-L resident + activations
  of 351 tokens.
- VAE decode with the default tiles (256 px / 64 overlap, 64 frames / 16): the decoder weights + the
  peak of its largest tile (one tile at a time is on the device; frames go to the CPU); and "vae (auto)":
  the tiles the planner chooses, the largest whose stage needs no more than the DiT's.
- Image-to-video (`--i2v`), at 720×1280×129 and 544×960×129: the DiT stage of HunyuanVideo-I2V latent
  concat (33 input channels, 288 image + 256 text tokens), token replace (16 channels, 144 + 256) and
  SkyReels-I2V (32 channels, 256 text tokens) next to T2V's (256); the text stage with LLaVA's vision
  tower (CLIP ViT-L/14-336 + projector, run first and freed) and the Llama on the I2V template's tokens.
Prints a table per stage and a JSON line last. Sizes: the four of the brief, plus `--size F H W`.

    python bench/memory_estimate.py [--size 61 480 848] [--quick] [--i2v]
    python bench/memory_estimate.py --family hunyuanvideo15      (HunyuanVideo 1.5: memory_estimate_15.py)
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
MEMEST = os.environ.get("MEMEST_PATH", os.path.join(HERE, "..", "..", "shared", "tools", "memest"))
sys.path.insert(0, MEMEST)
sys.path.insert(0, HERE)
GIB = 1024 ** 3
SIZES = [(129, 720, 1280), (129, 544, 960), (121, 512, 768), (129, 384, 512)]
# every stage (DiT, text, VAE with automatic tiles) on a 4 GB card: issue 24's figures, by the blocks' storage
STAGE_TARGETS = {(129, 720, 1280): {"bf16": 3.2, "fp8_e4m3fn": 2.6, "Q8_0": 2.6}, (129, 384, 512): {"bf16": 1.5}}
DIT_TARGETS = {(129, 544, 960): 4, (121, 512, 768): 3}  # the earlier DiT-only figures, kept
TEXT_TARGET = 0.8  # fp16 LLaVA, streamed projection by projection, CLIP-L resident


def target(stage: str, size: tuple, weights: str) -> float | None:
    if stage == "text encoder":
        return TEXT_TARGET
    if stage == "vae decode":  # the fixed default tiles: shown beside the automatic ones, no target
        return None
    stage_target = STAGE_TARGETS.get(size, {}).get(weights)
    return stage_target if stage_target else (DIT_TARGETS.get(size) if stage == "dit" else None)
DT = torch.bfloat16
FAMILIES = {"hunyuanvideo": "hunyuan_video", "hunyuan_video": "hunyuan_video", "hunyuanvideo15": "hunyuan_video_15",
            "hunyuan_video_15": "hunyuan_video_15"}


def param_bytes(module, dtype=DT) -> int:
    return sum(p.numel() for p in module.parameters()) * torch.empty((), dtype=dtype).element_size()


STORED = {"bf16": None, "fp8_e4m3fn": torch.float8_e4m3fn, "Q8_0": "Q8_0"}  # how the blocks' Linears are kept


def peak_breakdown(lb, top: int = 12) -> list[dict]:
    """The tensors alive at the peak (weights excluded: inputs and intermediates), grouped by the module that
    made them, the op and the shape, largest first."""
    groups: dict[tuple, list[int]] = {}
    for nbytes, op, module, shape, dtype in lb.peak_snapshot or []:
        key = (module, op.replace("aten.", "").replace(".default", ""), shape, dtype)
        groups.setdefault(key, []).append(nbytes)
    rows = [{"bytes": sum(v), "count": len(v), "module": k[0], "op": k[1], "shape": list(k[2]), "dtype": k[3]}
            for k, v in groups.items()]
    rows.sort(key=lambda r: -r["bytes"])
    return rows[:top] + ([{"bytes": sum(r["bytes"] for r in rows[top:]), "count": sum(r["count"] for r in rows[top:]),
                           "module": "(the rest)", "op": "", "shape": [], "dtype": ""}] if len(rows) > top else [])


def dit_stage(frames: int, height: int, width: int, text: int, quick: bool, in_channels: int = 16,
              breakdown: bool = False, weights: str = "bf16") -> dict:
    from estimate import LiveBytes  # memest
    from torch.func import functional_call

    from hystream.families import registry
    from hystream.families.hunyuan_video.config import DiTConfig
    from hystream.families.hunyuan_video.dit import HunyuanVideoDiT
    from hystream.families.hunyuan_video.memory import forward_peak_bytes
    from hystream.memory_probe import fake_mode, flash_attention
    from hystream.planner import dit_weights

    cfg = DiTConfig(in_channels=in_channels)
    with torch.device("meta"):
        full = HunyuanVideoDiT(cfg)
    # as the loader streams them: the double blocks as their four parts, so a slot is the largest unit
    units, fixed = dit_weights(registry.default(), weights, cfg)
    ring = 2 * max(units)
    shape = (1, 16, (frames - 1) // 4 + 1, height // 8, width // 8)
    stored = STORED[weights]
    shortcut = forward_peak_bytes(cfg, shape, text, DT, True, None, "cuda", stored=stored)
    act = shortcut
    if not quick and stored is None:  # the whole model on fake tensors (bf16; other weights: the shortcut's
        # reduced model, which counts their upcast / decoded temporaries)
        model = full
        model.compute_dtype, model.device = DT, torch.device("cuda")
        with flash_attention(), fake_mode():
            params = {n: torch.empty(p.shape, dtype=DT, device="cuda") for n, p in model.named_parameters()}
            inputs = {"x": torch.empty((1, in_channels, *shape[2:]), dtype=DT, device="cuda"),
                      "timestep": torch.empty(1, device="cuda"),
                      "txt": torch.empty(1, text, cfg.text_dim, dtype=DT, device="cuda"),
                      "pooled": torch.empty(1, cfg.pooled_dim, dtype=DT, device="cuda"),
                      "guidance": torch.empty(1, device="cuda")}
            lb = LiveBytes(round_to=512, snapshot=breakdown)
            # as a module's parameters (memest counts them, but leaves them out of the peak's snapshot)
            lb.track(torch.nn.ParameterList(torch.nn.Parameter(p, requires_grad=False) for p in params.values()))
            lb.track(list(inputs.values()))
            base = lb.cur
            if breakdown:
                lb.attach(model)
            try:
                with lb:
                    out = functional_call(model, params, (), inputs)
                del out
            finally:
                lb.detach()
        act = lb.peak - base
    tokens = shape[2] * (shape[3] // 2) * (shape[4] // 2)
    result = {"stage": "dit", "tokens": tokens + text, "weights_gib": (fixed + ring) / GIB, "ring_gib": ring / GIB,
              "fixed_gib": fixed / GIB, "activations_gib": act / GIB, "total_gib": (fixed + ring + act) / GIB,
              "planner_activations_gib": shortcut / GIB}
    if breakdown and not quick:
        result["breakdown"] = peak_breakdown(lb)
        result["peak_at"] = lb.peak_where
    return result


def text_stage() -> dict:
    import text_encoder_memory as tem

    config = tem.llama_config()
    ring = text_ring(config)
    clip = tem.clip_bytes(torch.float16)
    act = tem.activation_peak(config, 351, torch.float16) or 0
    return {"stage": "text encoder", "weights_gib": (ring + clip) / GIB, "activations_gib": act / GIB,
            "total_gib": (ring + clip + act) / GIB}


def text_ring(config) -> int:
    """Two slots of the largest part of an fp16 decoder layer (layers stream projection by projection)."""
    from hystream.loaders.decoder_layers import ring_bytes
    from hystream.models.llama_encoder import LlamaStates

    return ring_bytes(LlamaStates(config, torch.device("cpu")).layers[0], fp8=False)


def vision_stage() -> dict:
    """LLaVA's vision tower + projector on one 336×336 image (fake tensors, bf16)."""
    from estimate import LiveBytes
    from torch.func import functional_call

    from hystream.families.hunyuan_video.vision import LlavaVision, infer_vision_config
    from hystream.memory_probe import fake_mode, flash_attention

    shapes = {"embeddings.patch_embedding.weight": (1024, 3, 14, 14), "embeddings.position_embedding.weight": (577, 1024),
              "encoder.layers.0.mlp.fc1.weight": (4096, 1024)}
    shapes.update({f"encoder.layers.{i}.layer_norm1.weight": (1024,) for i in range(24)})
    vision = LlavaVision(infer_vision_config(shapes, "CLIP ViT-L/14-336"), 4096)
    weights = param_bytes(vision)
    with flash_attention(), fake_mode():
        params = {n: torch.empty(p.shape, dtype=DT, device="cuda") for n, p in vision.named_parameters()}
        buffers = {n: torch.zeros(b.shape, dtype=torch.long, device="cuda") for n, b in vision.named_buffers()}
        pixels = torch.empty(1, 3, 336, 336, dtype=DT, device="cuda")
        lb = LiveBytes(round_to=512)
        lb.track(list(params.values()), pixels)
        base = lb.cur
        with lb:
            out = functional_call(vision, {**params, **buffers}, (pixels,))
        del out
    act = lb.peak - base
    return {"stage": "vision tower", "weights_gib": weights / GIB, "activations_gib": act / GIB,
            "total_gib": (weights + act) / GIB}


def i2v_text_stage() -> dict:
    """The Llama pass of an I2V prompt: template (~103) + 576 image + 256 user + 5 tokens, with the vision
    features (576 × 4096) alive beside it; the vision tower is freed before it."""
    import text_encoder_memory as tem

    config = tem.llama_config()
    tokens = 103 + 576 + 256 + 5
    ring = text_ring(config)
    clip = tem.clip_bytes(torch.float16)
    act = (tem.activation_peak(config, tokens, torch.float16) or 0) + 576 * 4096 * 2
    return {"stage": "text encoder", "tokens": tokens, "weights_gib": (ring + clip) / GIB,
            "activations_gib": act / GIB, "total_gib": (ring + clip + act) / GIB}


I2V_SIZES = [(129, 720, 1280), (129, 544, 960)]
I2V_VARIANTS = [("T2V", 16, 256), ("I2V latent concat", 33, 576 // 2 + 256), ("I2V token replace", 16, 576 // 4 + 256),
                ("SkyReels-I2V", 32, 256)]


def i2v_rows(quick: bool) -> list[dict]:
    vision = vision_stage()
    text = i2v_text_stage()
    print(f"\n{'size':>16s} {'I2V stage':>22s} {'weights':>9s} {'activ.':>9s} {'total':>9s}")
    rows = []
    for f, h, w in I2V_SIZES:
        for name, channels, tokens in I2V_VARIANTS:
            dit = dit_stage(f, h, w, tokens, quick, channels)
            rows.append({"size": f"{f}x{h}x{w}", "variant": name, "text_tokens": tokens,
                         "dit_gib": round(dit["total_gib"], 4)})
            print(f"{f:>4d}×{h:>4d}×{w:<5d} {'DiT ' + name:>22s} {dit['weights_gib']:9.3f} {dit['activations_gib']:9.3f} "
                  f"{dit['total_gib']:9.3f}")
    for stage in (vision, text):
        print(f"{'any size':>16s} {stage['stage']:>22s} {stage['weights_gib']:9.3f} {stage['activations_gib']:9.3f} "
              f"{stage['total_gib']:9.3f}")
    t2v = {r["size"]: r["dit_gib"] for r in rows if r["variant"] == "T2V"}
    worst = max(abs(r["dit_gib"] - t2v[r["size"]]) for r in rows)
    return [{"rows": rows, "vision_tower_gib": round(vision["total_gib"], 4),
             "i2v_text_encoder_gib": round(text["total_gib"], 4), "i2v_text_tokens": text["tokens"],
             "dit_max_gib_over_t2v": round(worst, 4)}]


def vae_stage(frames: int, height: int, width: int) -> dict:
    from estimate import LiveBytes
    from torch.func import functional_call

    from hystream.families.hunyuan_video.vae import HunyuanVideoVAE, VAEConfig
    from hystream.memory_probe import fake_mode, flash_attention
    from hystream.vae.tiling import TileSpec

    with torch.device("meta"):
        vae = HunyuanVideoVAE(VAEConfig())
    spec = TileSpec()
    size_l, _, temporal_l, _ = spec.latent()
    t = (frames - 1) // 4 + 1
    tile = (1, 16, min(t, temporal_l + 1), min(height // 8, size_l), min(width // 8, size_l))  # + 1 warm-up frame
    weights = param_bytes(vae.decoder) + param_bytes(vae.post_quant_conv)
    dec = vae.decoder
    with flash_attention(), fake_mode():
        params = {n: torch.empty(p.shape, dtype=DT, device="cuda") for n, p in dec.named_parameters()}
        z = torch.empty(tile, dtype=DT, device="cuda")
        lb = LiveBytes(round_to=512)
        lb.track(list(params.values()), z)
        base = lb.cur
        with lb:
            out = functional_call(dec, params, (z,))
        del out
    act = lb.peak - base
    return {"stage": "vae decode", "tile_latent": list(tile[2:]), "weights_gib": weights / GIB,
            "activations_gib": act / GIB, "total_gib": (weights + act) / GIB}


def auto_vae_stage(frames: int, height: int, width: int, dit_gib: float) -> dict:
    """The VAE with the tiles the planner chooses automatically: the largest under the DiT stage's need."""
    from hystream import planner

    plan = planner.plan_vae(width, height, frames, None, cap=int(dit_gib * GIB))
    return {"stage": "vae (auto)", "tiles": plan.settings, "weights_gib": plan.weights / GIB,
            "activations_gib": plan.activations / GIB, "total_gib": plan.total / GIB}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, nargs=3, action="append", metavar=("FRAMES", "HEIGHT", "WIDTH"))
    ap.add_argument("--text", type=int, default=256, help="text tokens in the DiT (256 = the most a prompt gives)")
    ap.add_argument("--quick", action="store_true", help="DiT activations from the one-block-per-kind shortcut")
    ap.add_argument("--i2v", action="store_true", help="also the image-to-video rows (DiT variants, vision tower)")
    ap.add_argument("--breakdown", action="store_true",
                    help="list the tensors alive at the DiT's peak (module, op, shape; weights excluded)")
    ap.add_argument("--weights", default="bf16", choices=list(STORED),
                    help="how the DiT blocks' Linears are stored: bf16 (a bf16 file), fp8_e4m3fn (fp8 scaled), Q8_0 (GGUF)")
    ap.add_argument("--family", default="hunyuanvideo", choices=FAMILIES,
                    help="hunyuanvideo (1.0, the default) or hunyuanvideo15 (1.5: memory_estimate_15.py)")
    args = ap.parse_args()
    if FAMILIES[args.family] == "hunyuan_video_15":
        import memory_estimate_15 as m15

        rows15, ok15 = m15.rows(m15.SIZES + [tuple(s) for s in args.size or []])
        print(json.dumps({"bench": "memory_estimate", "family": "hunyuan_video_15", "dtype": "bf16",
                          "attention": "flash-style (memest stub)", "all_targets_met": ok15, "rows": rows15}))
        return
    sizes = SIZES + [tuple(s) for s in args.size or []]
    text = text_stage()
    rows = []
    print(f"{'size':>16s} {'stage':>13s} {'weights':>9s} {'activ.':>9s} {'total':>9s} {'target':>7s}")
    for f, h, w in sizes:
        dit = dit_stage(f, h, w, args.text, args.quick, breakdown=args.breakdown, weights=args.weights)
        vae = vae_stage(f, h, w)
        auto = auto_vae_stage(f, h, w, dit["total_gib"])
        row = {"frames": f, "height": h, "width": w, "dit": dit, "text_encoder": text, "vae_decode": vae,
               "targets": {}}
        rows.append(row)
        row["vae_decode_auto"] = auto
        for stage in (dit, text, vae, auto):
            row["targets"][stage["stage"]] = goal = target(stage["stage"], (f, h, w), args.weights)
            print(f"{f:>4d}×{h:>4d}×{w:<5d} {stage['stage']:>13s} {stage['weights_gib']:9.3f} "
                  f"{stage['activations_gib']:9.3f} {stage['total_gib']:9.3f} {'≤ ' + str(goal) if goal else '':>7s}")
        if dit.get("breakdown"):
            print(f"    alive at the DiT's peak ({dit['peak_at']['module']}, {dit['peak_at']['op']}):")
            for b in dit["breakdown"]:
                print(f"    {b['bytes'] / GIB:8.3f} GiB  {b['count']:>3d} × {b['shape']!s:<24s} {b['dtype']:<9s} "
                      f"{b['op']:<28s} {b['module']}")
    by_stage = {"dit": "dit", "text encoder": "text_encoder", "vae (auto)": "vae_decode_auto"}
    ok = all(r[by_stage[stage]]["total_gib"] <= goal for r in rows for stage, goal in r["targets"].items() if goal)
    i2v = i2v_rows(args.quick)[0] if args.i2v else None
    summary = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in
                [("size", f"{r['frames']}x{r['height']}x{r['width']}"),
                 ("dit_gib", r["dit"]["total_gib"]),
                 ("dit_activations_gib", r["dit"]["activations_gib"]),
                 ("dit_planner_activations_gib", r["dit"]["planner_activations_gib"]),
                 ("text_encoder_gib", r["text_encoder"]["total_gib"]),
                 ("vae_decode_gib", r["vae_decode"]["total_gib"]),
                 ("vae_decode_auto_gib", r["vae_decode_auto"]["total_gib"]),
                 ("vae_auto_tiles", r["vae_decode_auto"]["tiles"])]} | (
                   {"dit_breakdown": r["dit"]["breakdown"], "dit_peak_at": r["dit"]["peak_at"]}
                   if r["dit"].get("breakdown") else {}) for r in rows]
    print(json.dumps({"bench": "memory_estimate", "i2v": i2v, "dtype": "bf16", "weights": args.weights, "attention": "flash-style (memest stub)",
                      "all_targets_met": ok, "rows": summary}))


if __name__ == "__main__":
    main()
