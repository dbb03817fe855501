"""HunyuanVideo 1.5 at full size on a CPU box: the whole 8.3B DiT (Comfy-Org's fused fp16 layout,
hunyuanvideo1.5_480p_t2v_fp16.safetensors, 16.7 GB) and Qwen2.5-VL-7B's language model (Comfy-Org's
qwen_2.5_vl_7b_fp8_scaled layout) + ByT5-small (byt5_small_glyphxl_fp16) written from random weights tensor by
tensor (never whole in RAM), then run headless: the prompt through the streamed Qwen + ByT5, one streamed DiT
forward on its states. Reports each stage's peak RSS (VmHWM, mapped file pages included) and time; the issue's
bound is 4.5 GiB. peak_rss_gib is the process's whole peak (the interpreter and torch included);
above_start_gib what the stage added. Needs ~27 GB of disk (--dir) and the real Qwen2.5 / ByT5 tokenizers (ComfyUI ships them:
$COMFYUI_PATH or ../shared/comfyui). JSON line last.

    python bench/full_size_15.py [--dir /tmp] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
from measure import GIB, PeakRSS, trim

DTYPES = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32", torch.float8_e4m3fn: "F8_E4M3"}
PROMPT = 'A red fox trots through fresh snow past a wooden sign that reads "NORTH TRAIL", cinematic, realistic.'


def write_streamed(path: str, specs: list[tuple[str, torch.dtype, tuple[int, ...]]], make) -> int:
    """A safetensors file written one tensor at a time: the header from the specs, then make(name, dtype, shape)."""
    header, offset = {}, 0
    for name, dtype, shape in specs:
        size = torch.empty((), dtype=dtype).element_size() * int(torch.Size(shape).numel())
        header[name] = {"dtype": DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for name, dtype, shape in specs:
            t = make(name, dtype, shape).contiguous()
            f.write(t.view(torch.uint8).numpy().tobytes() if t.dim() else t.reshape(1).view(torch.uint8).numpy().tobytes())
            del t
    return offset


def random_tensor(name: str, dtype: torch.dtype, shape, g: torch.Generator) -> torch.Tensor:
    if dtype == torch.float8_e4m3fn:  # scaled fp8: values of a unit scale, the scale beside
        return (torch.randn(shape, generator=g) * 100).clamp(-448, 448).to(dtype)
    if name.endswith("scale_weight"):
        return torch.tensor(0.02 / 100, dtype=dtype)
    if len(shape) == 1:
        return ((1.0 if "norm" in name or "gamma" in name else 0.0) + 0.02 * torch.randn(shape, generator=g)).to(dtype)
    fan_in = max(1, int(torch.Size(shape[1:]).numel()))
    return (torch.randn(shape, generator=g) / fan_in ** 0.5).to(dtype)


def dit_specs() -> list:
    from hystream.families.hunyuan_video_15.config import DiTConfig
    from hystream.families.hunyuan_video_15.demo_dit import _SPLIT_QKV, fused
    from hystream.families.hunyuan_video_15.dit import HunyuanVideo15DiT

    with torch.device("meta"):
        sd = {n: p for n, p in HunyuanVideo15DiT(DiTConfig()).named_parameters()}
    split = {}
    for n, p in sd.items():  # Tencent's names with q/k/v apart, then Comfy-Org's fused repackaging
        m = _SPLIT_QKV.match(n)  # the double blocks' (the refiner's qkv is fused in every layout)
        if m:
            for part, chunk in zip("qkv", p.chunk(3)):
                split[f"{m.group(1)}_{part}.{m.group(3)}"] = chunk
        else:
            split[n] = p
    return [(n, torch.float16, tuple(t.shape)) for n, t in fused(split).items()]


def qwen_specs() -> list:
    import transformers

    cfg = transformers.Qwen2_5_VLTextConfig(vocab_size=152064, hidden_size=3584, intermediate_size=18944,
                                            num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                                            rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                                             "mrope_section": [16, 24, 24]})
    with torch.device("meta"):
        model = transformers.Qwen2_5_VLTextModel(cfg)
    return scaled_fp8_specs(model, (152064, 3584))


def scaled_fp8_specs(model, lm_head: tuple[int, int]) -> list:
    """A transformers decoder in Comfy-Org's scaled_fp8 layout: its layers' projections fp8 with an fp32 scale
    each, the rest fp16, under `model.`, and the LM head."""
    specs = [("scaled_fp8", torch.float8_e4m3fn, (0,))]
    for n, p in model.named_parameters():
        if n.startswith("layers.") and n.endswith("_proj.weight"):
            specs += [("model." + n, torch.float8_e4m3fn, tuple(p.shape)),
                      ("model." + n[: -len("weight")] + "scale_weight", torch.float32, ())]
        else:
            specs.append(("model." + n, torch.float16, tuple(p.shape)))
    return specs + [("lm_head.weight", torch.float16, lm_head)]


def byt5_specs() -> list:
    import transformers

    cfg = transformers.T5Config(vocab_size=1510, d_model=1472, d_kv=64, d_ff=3584, num_layers=12, num_heads=6,
                                feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False)
    with torch.device("meta"):
        model = transformers.T5EncoderModel(cfg)
    return [(n, torch.float16, tuple(p.shape)) for n, p in model.named_parameters() if n != "encoder.embed_tokens.weight"]


def write_all(folder: str) -> tuple[dict, float]:
    g = torch.Generator().manual_seed(0)
    paths = {"dit": os.path.join(folder, "hunyuanvideo1.5_480p_t2v_fp16.safetensors"),
             "llm": os.path.join(folder, "qwen_2.5_vl_7b_fp8_scaled.safetensors"),
             "byt5": os.path.join(folder, "byt5_small_glyphxl_fp16.safetensors")}
    t0 = time.perf_counter()
    for role, specs in (("dit", dit_specs()), ("llm", qwen_specs()), ("byt5", byt5_specs())):
        write_streamed(paths[role], specs, lambda n, d, s: random_tensor(n, d, s, g))
        trim()
    return paths, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=None, help="where the files are written (~27 GB)")
    ap.add_argument("--keep", action="store_true", help="keep the files")
    args = ap.parse_args()
    from comfy_host import find_comfyui
    from hystream import pipeline
    from hystream.families.registry import bundled_tokenizer_dirs
    from hystream.loading import load_dit, load_text_encoder

    comfy = find_comfyui()
    if comfy is None:
        raise SystemExit("needs a ComfyUI for the real Qwen2.5 / ByT5 tokenizers: set COMFYUI_PATH")
    folder = tempfile.mkdtemp(prefix="hv15-full-", dir=args.dir)
    report = {"bench": "full_size_15", "bound_gib": 4.5}
    try:
        paths, written = write_all(folder)
        report.update(write_s=round(written, 1), files_gib={k: round(os.path.getsize(p) / GIB, 2) for k, p in paths.items()})
        t0 = time.perf_counter()
        with PeakRSS() as rss, torch.inference_mode():
            te = load_text_encoder(paths["llm"], paths["byt5"], host_tokenizer_dirs=bundled_tokenizer_dirs(comfy))
            positive = pipeline.encode_prompt(te, PROMPT)
            te.close()
            del te
        report["text"] = {"peak_rss_gib": round(rss.peak / GIB, 3), "above_start_gib": round((rss.peak - rss.start) / GIB, 3),
                          "seconds": round(time.perf_counter() - t0, 1),
                          "states": list(positive[0][0].shape)}
        trim()
        states, extra = positive[0]
        glyph = extra.get("conditioning_byt5small")
        t0 = time.perf_counter()
        with PeakRSS() as rss, torch.inference_mode():
            dit = load_dit(paths["dit"], "cpu", prefetch_blocks=1)
            g = torch.Generator().manual_seed(0)
            with dit.streamer.session():
                out = dit(x=torch.randn(1, 65, 1, 16, 16, generator=g), timestep=torch.tensor([900.0]), txt=states,
                          glyph=glyph, glyph_mask=None if glyph is None else torch.ones(1, glyph.shape[1], dtype=torch.long))
            stats = dit.stats.as_dict()
            dit.close()
            del dit
        report["dit"] = {"peak_rss_gib": round(rss.peak / GIB, 3), "above_start_gib": round((rss.peak - rss.start) / GIB, 3),
                         "seconds": round(time.perf_counter() - t0, 1),
                         "blocks_streamed": stats["copies"], "finite": bool(torch.isfinite(out).all())}
        report["within_bound"] = max(report["text"]["peak_rss_gib"], report["dit"]["peak_rss_gib"]) <= 4.5
        print(f"text: {report['text']}\nDiT: {report['dit']}")
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
