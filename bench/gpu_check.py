"""Every check that needs a GPU, in one short run (≤ 8 minutes on one GPU); prints one JSON line last.

1. the stream-protocol tests (`pytest -m stream_protocol`, the CUDA test of test_streamer.py) on the
   real CUDA under TORCH_CUDA_SANITIZER=1 (PyTorch's CUDA sanitizer: unsynchronised stream accesses);
2. streamed vs resident DiT at full width (hidden 3072) on the GPU: bit-identical? time ratio;
3. peak VRAM measured vs the estimate the automatic budget plans with: the DiT stage (full width, a few
   blocks, a 720p-sized token count), the LLaVA stage (full-width layers, the template's token count) and
   a VAE decode tile (full width);
4. page-locked bytes held vs the weight bytes they hold (pinned tier);
5. the GPU's stall per streamed block (events), and the CUDA context's size.

Without a GPU it prints {"gpu": false, ...} and exits 0. `--device cpu` runs sections 2-4 on the CPU as a
dry run of the script itself (figures meaningless, code paths exercised).

    python bench/gpu_check.py [--budget-s 480] [--skip-protocol]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measure import GIB, median, sync, timed, trim  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def section(report: dict, name: str, fn, deadline: float):
    if time.time() > deadline:
        report[name] = {"skipped": "time budget spent"}
        return
    t0 = time.time()
    try:
        report[name] = fn()
    except Exception as e:  # one failing section must not hide the others' figures
        report[name] = {"error": f"{type(e).__name__}: {str(e)[:400]}", "trace": traceback.format_exc()[-1500:]}
    report[name]["seconds"] = round(time.time() - t0, 1)
    print(f"{name}: {json.dumps(report[name])[:400]}", file=sys.stderr, flush=True)
    trim()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def protocol_under_sanitizer(timeout: int) -> dict:
    env = dict(os.environ, TORCH_CUDA_SANITIZER="1", HYSTREAM_PROTOCOL_DEVICE="cuda")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "stream_protocol",
           "tests/test_stream_protocol.py", "tests/test_streamer.py::test_cuda_streamed_equals_a_resident_cuda_run"]
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    tail = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    return {"returncode": r.returncode, "summary": tail, "passed": r.returncode == 0,
            "failures": [line for line in r.stdout.splitlines() if line.startswith("FAILED")][:10]}


def write_dit(folder: str, double: int, single: int) -> tuple[str, object]:
    from safetensors.torch import save_file

    from hystream.demo import random_dit_state_dict
    from hystream.models.dit_config import DiTConfig

    cfg = dataclasses.replace(DiTConfig(), depth_double=double, depth_single=single)
    path = os.path.join(folder, "dit_fullwidth_bf16.safetensors")
    sd = random_dit_state_dict(cfg, dtype=torch.bfloat16)
    save_file({"model.diffusion_model." + k: v for k, v in sd.items()}, path)
    del sd
    return path, cfg


def dit_inputs(cfg, latent: tuple, text: int, device):
    g = torch.Generator().manual_seed(0)
    return dict(x=torch.randn(1, 16, *latent, generator=g).to(device), timestep=torch.tensor([700.0]),
                txt=torch.randn(1, text, cfg.text_dim, generator=g).to(device),
                pooled=torch.randn(1, cfg.pooled_dim, generator=g).to(device), guidance=torch.tensor([6000.0]))


def streamed_vs_resident(path, cfg, device) -> dict:
    from hystream.loaders.dit_loader import load_dit

    inputs = dit_inputs(cfg, (4, 32, 32) if device.type == "cuda" else (1, 8, 8), 128, device)
    outs, times, stats = {}, {}, {}
    for mode, resident in (("streamed", None), ("resident", "all")):
        dit = load_dit(path, device, prefetch_blocks=1, resident_blocks=resident, host_tier="pinned")
        try:
            with torch.no_grad(), dit.streamer.session():
                dit(**inputs)  # warm-up
                dit.streamer.stats.reset()
                times[mode] = median([timed(lambda: dit(**inputs), device) for _ in range(3)])
                outs[mode] = dit(**inputs).float().cpu()
            stats[mode] = dit.stats.as_dict()
            held = dit.streamer.store.held_bytes
            weights = sum(dit.streamer.block_bytes(i) for i in range(len(dit.streamer.blocks)))
        finally:
            dit.close()
    s = stats["streamed"]
    return {"identical": bool(torch.equal(outs["streamed"], outs["resident"])),
            "max_abs_diff": float((outs["streamed"] - outs["resident"]).abs().max()),
            "time_streamed_s": round(times["streamed"], 4), "time_resident_s": round(times["resident"], 4),
            "time_ratio": round(times["streamed"] / times["resident"], 4),
            "stall_ms_per_block": round(1000 * s["stall_seconds"] / max(1, s["copies"]), 3),
            "wait_ms_per_block": round(1000 * s["wait_seconds"] / max(1, s["copies"]), 3),
            "pinned_bytes": held, "weight_bytes": weights, "pinned_ratio": round(held / weights, 4) if weights else None}


def dit_peak_vs_estimate(path, cfg, device) -> dict:
    """The DiT stage at a 720p-sized token count (720×1280×129: 118,800 image tokens)."""
    from hystream.loaders.dit_loader import load_dit

    latent = (33, 90, 160)
    dit = load_dit(path, device, prefetch_blocks=1)
    try:
        inputs = dit_inputs(cfg, latent, 256, device)
        estimate_act = dit.model.activation_bytes((1, 16, *latent), 256)
        ring = 2 * max(dit.streamer.block_bytes(i) for i in range(len(dit.streamer.blocks)))
        estimate = estimate_act + ring + dit.streamer.fixed_bytes
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        with torch.no_grad():
            out = dit(**inputs)
        sync(device)
        measured = (torch.cuda.max_memory_allocated(device) - base + dit.streamer.fixed_bytes) if device.type == "cuda" else None
        del out
    finally:
        dit.close()
    return {"tokens": latent[0] * latent[1] * latent[2] // 4 + 256, "estimate_gib": round(estimate / GIB, 3),
            "measured_gib": round(measured / GIB, 3) if measured else None,
            "measured_over_estimate": round(measured / estimate, 4) if measured else None,
            "attention_kernel": dit.model.attention_kernel(), "compute_dtype": str(dit.model.compute_dtype)}


def llava_peak_vs_estimate(folder, device) -> dict:
    """Full-width LLaVA layers (4 of them, 2 run), the template's token count: ring + activations."""
    import transformers
    from safetensors.torch import save_file

    from hystream.demo import write_clip_l, write_tiny_clip_tokenizer, write_tiny_llama_tokenizer
    from hystream.loaders.text_encoder_loader import load_text_encoder
    from hystream.loaders.tokenizer_files import load_clip_tokenizer
    from hystream.planner import TEMPLATE_TOKENS, _llama_activations

    te_dir = os.path.join(folder, "te")
    write_tiny_llama_tokenizer(te_dir)
    write_tiny_clip_tokenizer(te_dir)
    cfg = transformers.LlamaConfig(vocab_size=128320, hidden_size=4096, intermediate_size=14336, num_hidden_layers=4,
                                   num_attention_heads=32, num_key_value_heads=8, head_dim=128)
    with torch.device("meta"):
        names = {k: v.shape for k, v in transformers.LlamaModel(cfg).state_dict().items()}
    save_file({"model." + k: (torch.randn(s) * 0.02).half() for k, s in names.items()},
              os.path.join(te_dir, "llava_llama3_fp16.safetensors"))
    clip_tok = load_clip_tokenizer(te_dir)
    clip = write_clip_l(te_dir, len(clip_tok), clip_tok.eos_token_id, clip_tok.bos_token_id)
    te = load_text_encoder(os.path.join(te_dir, "llava_llama3_fp16.safetensors"), clip, device)
    try:
        te.to_device()
        prompt = " ".join(["fox"] * 300 if device.type == "cuda" else ["fox"] * 10)  # the full 256 user tokens
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        te.encode(prompt, use_cache=False)
        sync(device)
        measured = torch.cuda.max_memory_allocated(device) - base if device.type == "cuda" else None
        ring = 2 * te.streamer.block_bytes(0)
    finally:
        te.close()
    estimate = ring + _llama_activations(TEMPLATE_TOKENS)
    return {"estimate_gib": round(estimate / GIB, 3), "measured_gib": round(measured / GIB, 3) if measured else None,
            "measured_over_estimate": round(measured / estimate, 4) if measured else None}


def vae_peak_vs_estimate(folder, device) -> dict:
    """One full-width decoder tile (the default 256 px × 64 frames tile: latent 17 × 32 × 32)."""
    from hystream.demo import write_comfy_vae
    from hystream.loaders.vae_loader import load_vae
    from hystream.planner import vae_tile_peak
    from hystream.vae.tiling import TileSpec

    path = write_comfy_vae(os.path.join(folder, "vae"), full_size=True)
    vae = load_vae(path, device)
    try:
        vae.to_device()
        z = torch.randn(1, 16, 17, 32, 32) if device.type == "cuda" else torch.randn(1, 16, 2, 8, 8)
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        from hystream import pipeline

        pipeline.decode(vae, z, TileSpec(256, 64, 64, 16))
        sync(device)
        measured = torch.cuda.max_memory_allocated(device) - base if device.type == "cuda" else None
        dtype = vae.model.dtype if hasattr(vae.model, "dtype") else torch.bfloat16
    finally:
        vae.close()
    estimate = vae_tile_peak(tuple(z.shape[2:]), dtype if dtype in (torch.bfloat16, torch.float16, torch.float32) else torch.bfloat16)
    return {"estimate_gib": round(estimate / GIB, 3), "measured_gib": round(measured / GIB, 3) if measured else None,
            "measured_over_estimate": round(measured / estimate, 4) if measured else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu for a dry run of the script")
    ap.add_argument("--budget-s", type=float, default=480, help="stop starting sections after this many seconds")
    ap.add_argument("--skip-protocol", action="store_true", help="skip the sanitizer run of the protocol tests")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"gpu": False, "reason": "torch.cuda.is_available() is False", "torch": torch.__version__}))
        return 0
    device = torch.device(args.device)
    deadline = time.time() + args.budget_s
    report: dict = {"gpu": device.type == "cuda", "torch": torch.__version__}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        torch.zeros(1, device=device)
        free, total = torch.cuda.mem_get_info(device)
        report.update(name=props.name, capability=list(torch.cuda.get_device_capability(device)),
                      total_gib=round(total / GIB, 2),
                      cuda_context_gib=round((total - free - torch.cuda.memory_reserved(device)) / GIB, 3))
        if not args.skip_protocol:
            section(report, "protocol_sanitizer", lambda: protocol_under_sanitizer(int(min(240, args.budget_s / 2))), deadline)
    folder = tempfile.mkdtemp(prefix="hystream-gpu-check-")
    path, cfg = write_dit(folder, 2, 2)
    section(report, "dit_streamed_vs_resident", lambda: streamed_vs_resident(path, cfg, device), deadline)
    section(report, "dit_peak", lambda: dit_peak_vs_estimate(path, cfg, device) if device.type == "cuda" else
            {"skipped": "a 720p token count needs a GPU"}, deadline)
    section(report, "llava_peak", lambda: llava_peak_vs_estimate(folder, device), deadline)
    section(report, "vae_peak", lambda: vae_peak_vs_estimate(folder, device), deadline)
    for name, value in report.items():
        print(f"{name:28s} {json.dumps(value)[:300]}")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
