"""GGUF DiT blocks on the wire: bytes per block, ring slot size, time and peak RSS vs the bf16 file.

Writes a full-width random DiT (hidden 3072, 24 heads; by default 1 double + 2 single blocks + the token
refiner's 2) as a bf16 safetensors file and as GGUF files whose block Linears are Q8_0, Q4_K, or the
Q4_K_M mix (Q4_K, with Q6_K for the MLP down projections as llama.cpp's _M does); 1-D tensors F32, the
patch embedding F32 and the small embedders BF16, as city96's converter writes them. Files are written
tensor by tensor (random valid quantised blocks), never whole in RAM. Then, for each file, in one
process: the streamed forward's bytes copied per streamed block and the ring slot size, and the time per
forward (each model alone in its session, alternating rounds so drift hits all), and its peak RSS.

--full-size writes the whole 13B DiT (20 double + 40 single) as a Q4_K_M-sized GGUF and runs one streamed
forward from it, reporting the file size and the peak RSS of loading + the forward.

    python bench/gguf_stream.py [--types bf16,Q8_0,Q4_K,Q4_K_M] [--double 1 --single 2] [--full-size]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from hystream.families.hunyuan_video.config import DiTConfig
from hystream.families.hunyuan_video.dit import HunyuanVideoDiT
from hystream.loading import load_dit
from hystream.quant.kinds import KINDS
from measure import GIB, PeakRSS, median, timed, trim

BLOCKS = ("double_blocks.", "single_blocks.", "txt_in.individual_token_refiner.")
# offsets of the fp16 scale fields in each block, and a magnitude giving weights of ~0.05
HALF_FIELDS = {"Q8_0": (0,), "Q4_K": (0, 2), "Q6_K": (208,)}
FIELD_SCALE = {"Q8_0": 0.0004, "Q4_K": 0.0006, "Q6_K": 0.00003}


def tensor_type(name: str, shape: tuple, mix: str) -> str:
    if len(shape) == 1 or name == "img_in.proj.weight":
        return "F32"
    if not name.startswith(BLOCKS):
        return "BF16"
    if mix == "Q4_K_M":
        return "Q6_K" if name.endswith(("linear2.weight", "mlp.fc2.weight", "_mlp.fc2.weight")) else "Q4_K"
    return mix


def random_blocks(rows: int, cols: int, qtype: str, rng: np.random.Generator) -> np.ndarray:
    kind = KINDS[qtype]
    data = rng.integers(0, 256, size=(rows, kind.row_bytes(cols)), dtype=np.uint8)
    blocks = data.reshape(-1, kind.type_size)
    for off in HALF_FIELDS[qtype]:
        half = np.abs(rng.normal(0, FIELD_SCALE[qtype], size=(blocks.shape[0], 1))).astype(np.float16)
        blocks[:, off:off + 2] = half.view(np.uint8)
    return data


def float_values(name: str, shape: tuple, rng: np.random.Generator) -> np.ndarray:
    t = rng.standard_normal(shape, dtype=np.float32)
    if "norm" in name:
        t = 1 + 0.1 * t
    else:
        t = t / np.sqrt(np.prod(shape[1:])) if len(shape) > 1 else 0.05 * t
    return np.ascontiguousarray(t, dtype=np.float32)


def write_gguf(path: str, cfg: DiTConfig, mix: str) -> str:
    """The DiT in city96's layout, one tensor generated and written at a time."""
    import gguf

    with torch.device("meta"):
        names = [(n, tuple(p.shape)) for n, p in HunyuanVideoDiT(cfg).named_parameters()]
    writer = gguf.GGUFWriter(path, arch="hyvid")
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    plan = []
    for name, shape in names:
        qtype = tensor_type(name, shape, mix)
        if qtype == "F32":
            nbytes = int(np.prod(shape)) * 4
            writer.add_tensor_info(name, shape, np.dtype(np.float32), nbytes)
        elif qtype == "BF16":
            nbytes = int(np.prod(shape)) * 2
            writer.add_tensor_info(name, (*shape[:-1], shape[-1] * 2), np.dtype(np.uint8), nbytes,
                                   raw_dtype=gguf.GGMLQuantizationType.BF16)
        else:
            nbytes = shape[0] * KINDS[qtype].row_bytes(shape[1])
            writer.add_tensor_info(name, (shape[0], KINDS[qtype].row_bytes(shape[1])), np.dtype(np.uint8), nbytes,
                                   raw_dtype=getattr(gguf.GGMLQuantizationType, qtype))
        plan.append((name, shape, qtype))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    rng = np.random.default_rng(0)
    for name, shape, qtype in plan:
        if qtype == "F32":
            writer.write_tensor_data(float_values(name, shape, rng))
        elif qtype == "BF16":
            bits = torch.from_numpy(float_values(name, shape, rng)).to(torch.bfloat16).view(torch.int16).numpy()
            writer.write_tensor_data(bits.view(np.uint8).reshape(*shape[:-1], -1))
        else:
            writer.write_tensor_data(random_blocks(shape[0], shape[1], qtype, rng))
    writer.close()
    return path


def write_bf16(path: str, cfg: DiTConfig) -> str:
    from safetensors.torch import save_file

    from hystream.families.hunyuan_video.demo import random_dit_state_dict

    sd = random_dit_state_dict(cfg, seed=0, dtype=torch.bfloat16)
    save_file({"model.diffusion_model." + k: v for k, v in sd.items()}, path)
    del sd
    trim()
    return path


def inputs_for(cfg: DiTConfig, frames=2, height=32, width=32, text=64) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"x": torch.randn(1, 16, frames, height, width, generator=g), "timestep": torch.tensor([700.0]),
            "txt": torch.randn(1, text, cfg.text_dim, generator=g),
            "pooled": torch.randn(1, cfg.pooled_dim, generator=g), "guidance": torch.tensor([6000.0])}


def forward(dit, inputs):
    with torch.inference_mode():
        return dit(**inputs)


def measure_one(path: str, inputs: dict, prefetch: int) -> dict:
    with PeakRSS() as rss:
        dit = load_dit(path, "cpu", prefetch_blocks=prefetch)
        with dit.streamer.session():
            out = forward(dit, inputs)
        stats = dit.stats.as_dict()
        slot = max(dit.streamer.block_bytes(i) for i in range(dit.streamer.block_count()))
    dit.close()
    del dit
    trim()
    assert torch.isfinite(out).all(), f"{path}: the forward gave non-finite values"
    return {"file_gib": round(os.path.getsize(path) / GIB, 3), "peak_rss_gib": round((rss.peak - rss.start) / GIB, 3),
            "wire_mib_per_block": round(stats["bytes_copied"] / max(1, stats["copies"]) / 2 ** 20, 2),
            "ring_slot_mib": round(slot / 2 ** 20, 2), "copies": stats["copies"]}


def full_size(folder: str, prefetch: int) -> dict:
    cfg = DiTConfig()
    path = os.path.join(folder, "hunyuan-video-t2v-720p-Q4_K_M-random.gguf")
    t0 = time.perf_counter()
    write_gguf(path, cfg, "Q4_K_M")
    written = time.perf_counter() - t0
    trim()
    t0 = time.perf_counter()
    row = measure_one(path, inputs_for(cfg, frames=1, height=16, width=16, text=16), prefetch)
    row.update(write_s=round(written, 1), forward_with_load_s=round(time.perf_counter() - t0, 1),
               blocks=cfg.streamed_blocks)
    os.remove(path)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--types", default="bf16,Q8_0,Q4_K,Q4_K_M")
    ap.add_argument("--double", type=int, default=1)
    ap.add_argument("--single", type=int, default=2)
    ap.add_argument("--prefetch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2, help="timed forwards per round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--full-size", action="store_true", help="also the whole 13B DiT as a Q4_K_M-sized GGUF")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    cfg = dataclasses.replace(DiTConfig(), depth_double=args.double, depth_single=args.single)
    folder = args.workdir or tempfile.mkdtemp(prefix="hystream-gguf-bench-")
    types = args.types.split(",")
    paths = {t: (write_bf16(os.path.join(folder, "dit_bf16.safetensors"), cfg) if t == "bf16" else
                 write_gguf(os.path.join(folder, f"dit_{t}.gguf"), cfg, t)) for t in types}
    inputs = inputs_for(cfg)
    rows = {t: measure_one(p, inputs, args.prefetch) for t, p in paths.items()}
    times = {t: [] for t in types}
    for _ in range(args.rounds):
        for t, p in paths.items():
            dit = load_dit(p, "cpu", prefetch_blocks=args.prefetch)
            with dit.streamer.session():
                forward(dit, inputs)  # warm-up (and the page cache)
                times[t] += [timed(lambda dit=dit: forward(dit, inputs), torch.device("cpu"))
                             for _ in range(args.repeats)]
            dit.close()
            del dit
            trim()
    base = rows.get("bf16")
    for t, row in rows.items():
        row["time_s"] = round(median(times[t]), 3)
        if base:
            row["wire_vs_bf16"] = round(row["wire_mib_per_block"] / base["wire_mib_per_block"], 3)
            row["time_vs_bf16"] = round(median(times[t]) / median(times["bf16"]), 3)
    report = {"bench": "gguf_stream", "device": "cpu", "torch_threads": torch.get_num_threads(), "hidden": cfg.hidden,
              "blocks": cfg.streamed_blocks, "image_tokens": 2 * 16 * 16, "text_tokens": 64, "prefetch": args.prefetch,
              "rows": rows}
    for p in paths.values():
        os.remove(p)
    if args.full_size:
        report["full_size_Q4_K_M"] = full_size(folder, args.prefetch)
    for t, row in rows.items():
        print(f"{t:8s} {row}")
    if "full_size_Q4_K_M" in report:
        print(f"full size Q4_K_M {report['full_size_Q4_K_M']}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
