"""Peak device memory of each stage at real sizes, without a GPU: the fake-tensor estimator
(shared/tools/memest: LiveBytes + the O(N) flash-style attention stub, validated against real
allocations) run on HyStream's real model classes with the real shapes, bf16.

- DiT (streamed): the full 62-block model runs on fake tensors; activations = its peak minus the
  weights it was given; on the device = non-block weights + a ring of 2 streamed blocks + activations.
- Text encoder: LLaVA-Llama-3-8B's 30 used layers (ring of 2, fp16) + CLIP-L resident + activations
  of 351 tokens.
- VAE decode with the default tiles (256 px / 64 overlap, 64 frames / 16): the decoder weights + the
  peak of its largest tile (one tile at a time is on the device; frames go to the CPU).
Prints a table per stage and a JSON line last. Sizes: the four of the brief, plus `--size F H W`.

    python bench/memory_estimate.py [--size 61 480 848] [--quick]
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
TARGETS = {(129, 720, 1280): 6, (129, 544, 960): 4, (121, 512, 768): 3, (129, 384, 512): 2}
DT = torch.bfloat16


def param_bytes(module, dtype=DT) -> int:
    return sum(p.numel() for p in module.parameters()) * torch.empty((), dtype=dtype).element_size()


def dit_stage(frames: int, height: int, width: int, text: int, quick: bool) -> dict:
    from estimate import LiveBytes  # memest
    from torch.func import functional_call

    from hystream.memory_probe import fake_mode, flash_attention
    from hystream.models.dit import HunyuanVideoDiT
    from hystream.models.dit_config import DiTConfig
    from hystream.models.dit_memory import forward_peak_bytes

    cfg = DiTConfig()
    with torch.device("meta"):
        full = HunyuanVideoDiT(cfg)
    blocks = [param_bytes(b) for b in full.blocks]
    ring = 2 * max(blocks)
    fixed = param_bytes(full) - sum(blocks)
    shape = (1, 16, (frames - 1) // 4 + 1, height // 8, width // 8)
    shortcut = forward_peak_bytes(cfg, shape, text, DT, True, None, "cuda")
    act = shortcut
    if not quick:
        model = full
        model.compute_dtype, model.device = DT, torch.device("cuda")
        with flash_attention(), fake_mode():
            params = {n: torch.empty(p.shape, dtype=DT, device="cuda") for n, p in model.named_parameters()}
            inputs = dict(x=torch.empty(shape, dtype=DT, device="cuda"), timestep=torch.empty(1, device="cuda"),
                          txt=torch.empty(1, text, cfg.text_dim, dtype=DT, device="cuda"),
                          pooled=torch.empty(1, cfg.pooled_dim, dtype=DT, device="cuda"),
                          guidance=torch.empty(1, device="cuda"))
            lb = LiveBytes(round_to=512)
            lb.track(list(params.values()))
            lb.track(list(inputs.values()))
            base = lb.cur
            with lb:
                out = functional_call(model, params, (), inputs)
            del out
        act = lb.peak - base
    tokens = shape[2] * (shape[3] // 2) * (shape[4] // 2)
    return dict(stage="dit", tokens=tokens + text, weights_gib=(fixed + ring) / GIB, ring_gib=ring / GIB,
                fixed_gib=fixed / GIB, activations_gib=act / GIB, total_gib=(fixed + ring + act) / GIB,
                planner_activations_gib=shortcut / GIB)


def text_stage() -> dict:
    import text_encoder_memory as tem

    config = tem.llama_config()
    layer = tem.layer_bytes(config, {"linear": 2, "other": 2})
    clip = tem.clip_bytes(torch.float16)
    act = tem.activation_peak(config, 351, torch.float16) or 0
    return dict(stage="text encoder", weights_gib=(2 * layer + clip) / GIB, activations_gib=act / GIB,
                total_gib=(2 * layer + clip + act) / GIB)


def vae_stage(frames: int, height: int, width: int) -> dict:
    from estimate import LiveBytes
    from torch.func import functional_call

    from hystream.memory_probe import fake_mode, flash_attention
    from hystream.vae.model import HunyuanVideoVAE, VAEConfig
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
    return dict(stage="vae decode", tile_latent=list(tile[2:]), weights_gib=weights / GIB, activations_gib=act / GIB,
                total_gib=(weights + act) / GIB)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, nargs=3, action="append", metavar=("FRAMES", "HEIGHT", "WIDTH"))
    ap.add_argument("--text", type=int, default=256, help="text tokens in the DiT (256 = the most a prompt gives)")
    ap.add_argument("--quick", action="store_true", help="DiT activations from the one-block-per-kind shortcut")
    args = ap.parse_args()
    sizes = SIZES + [tuple(s) for s in args.size or []]
    text = text_stage()
    rows = []
    print(f"{'size':>16s} {'stage':>13s} {'weights':>9s} {'activ.':>9s} {'total':>9s} {'target':>7s}")
    for f, h, w in sizes:
        dit = dit_stage(f, h, w, args.text, args.quick)
        vae = vae_stage(f, h, w)
        row = dict(frames=f, height=h, width=w, dit=dit, text_encoder=text, vae_decode=vae,
                   dit_target_gib=TARGETS.get((f, h, w)))
        rows.append(row)
        for stage in (dit, text, vae):
            target = {"dit": TARGETS.get((f, h, w)), "text encoder": 2, "vae decode": 4 if (f, h, w) == SIZES[0] else None}[stage["stage"]]
            print(f"{f:>4d}×{h:>4d}×{w:<5d} {stage['stage']:>13s} {stage['weights_gib']:9.3f} "
                  f"{stage['activations_gib']:9.3f} {stage['total_gib']:9.3f} {'≤ ' + str(target) if target else '':>7s}")
    ok = all(r["dit"]["total_gib"] <= r["dit_target_gib"] for r in rows if r["dit_target_gib"])
    ok = ok and text["total_gib"] <= 2 and rows[0]["vae_decode"]["total_gib"] <= 4
    print(json.dumps(dict(bench="memory_estimate", dtype="bf16", attention="flash-style (memest stub)",
                          all_targets_met=ok, rows=[{k: (round(v, 4) if isinstance(v, float) else v) for k, v in
                                                     [("size", f"{r['frames']}x{r['height']}x{r['width']}"),
                                                      ("dit_gib", r["dit"]["total_gib"]),
                                                      ("dit_activations_gib", r["dit"]["activations_gib"]),
                                                      ("dit_planner_activations_gib", r["dit"]["planner_activations_gib"]),
                                                      ("text_encoder_gib", r["text_encoder"]["total_gib"]),
                                                      ("vae_decode_gib", r["vae_decode"]["total_gib"])]} for r in rows])))


if __name__ == "__main__":
    main()
