"""gpu_check's peaks section: each stage's peak device memory, allocated and reserved (the peak counters
reset at the stage's start), against the estimate the automatic budget plans with:

- the DiT at a 720p-sized token count: activations (fake-tensor estimate) + ring + the non-block weights;
- LLaVA's layers streamed (no budget: every layer streams, prefetch 1), 256 user tokens in the template
  (the tiny tokenizer's template is longer than the real 95 tokens; the estimate is for the count run):
  ring + the planner's activation estimate;
- one full-width VAE decode tile: the planner's tile peak.
Measured figures count from the stage's start (after the weights that stay on the device were uploaded);
the DiT's adds its non-block weights back, as its estimate counts them."""

from __future__ import annotations

import os
import traceback

import torch

from gpu_dit import dit_inputs
from measure import GIB

NEEDS_GPU = "skipped: needs a GPU"


class StagePeak:
    """Peak allocated / reserved bytes above the stage's start, on a CUDA device; None elsewhere."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"
        self.device, self.allocated, self.reserved = device, None, None

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = (torch.cuda.memory_allocated(self.device), torch.cuda.memory_reserved(self.device))
        return self

    def __exit__(self, *exc):
        if self.cuda and exc[0] is None:
            torch.cuda.synchronize(self.device)
            self.allocated = torch.cuda.max_memory_allocated(self.device) - self.base[0]
            self.reserved = torch.cuda.max_memory_reserved(self.device) - self.base[1]
        return False


def figures(estimate: int, peak: StagePeak, held: int = 0) -> dict:
    """Estimate vs measured (+ `held`: bytes on the device before the stage that its estimate counts)."""
    out = {"estimate_gib": round(estimate / GIB, 3)}
    for name in ("allocated", "reserved"):
        value = getattr(peak, name)
        if value is None:
            out[f"measured_{name}_gib"] = NEEDS_GPU
            continue
        out[f"measured_{name}_gib"] = round((value + held) / GIB, 3)
        out[f"{name}_over_estimate"] = round((value + held) / estimate, 4)
    return out


def dit_stage(ctx) -> dict:
    from hystream.loading import load_dit

    if ctx.dit_path is None:
        return {"skipped": "no DiT file (see dit_file)"}
    latent, text = ((1, 8, 8), 16) if ctx.small else ((33, 90, 160), 256)  # 720×1280×129: 118,800 image tokens
    dit = load_dit(ctx.dit_path, ctx.device, prefetch_blocks=1, host_tier="pinned")
    try:
        inputs = dit_inputs(dit.config, latent, text, ctx.device)
        streamer = dit.streamer
        ring = 2 * max(streamer.block_bytes(i) for i in range(streamer.block_count()))
        estimate = dit.model.activation_bytes((1, 16, *latent), text) + ring + streamer.fixed_bytes()
        with torch.no_grad(), StagePeak(ctx.device) as peak:
            dit(**inputs)
        return {"image_tokens": latent[0] * latent[1] * latent[2] // 4, "text_tokens": text,
                **figures(estimate, peak, held=streamer.fixed_bytes()),
                "attention_kernel": dit.model.attention_kernel(), "compute_dtype": str(dit.model.compute_dtype)}
    finally:
        dit.close()


def write_llava(folder: str, small: bool) -> tuple[str, str]:
    """A LLaVA-Llama-3 file with full-width layers (4 of them; tiny on the dry run) and a CLIP-L beside it."""
    import transformers
    from safetensors.torch import save_file

    from hystream.families.hunyuan_video.demo import write_clip_l, write_tiny_clip_tokenizer, write_tiny_llama_tokenizer
    from hystream.loaders.tokenizer_files import load_clip_tokenizer, load_fast_tokenizer

    write_tiny_llama_tokenizer(folder)
    write_tiny_clip_tokenizer(folder)
    width = ({"hidden_size": 256, "intermediate_size": 512, "num_attention_heads": 2, "num_key_value_heads": 1}
             if small else {"hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
                            "num_key_value_heads": 8})
    cfg = transformers.LlamaConfig(vocab_size=len(load_fast_tokenizer(folder)), num_hidden_layers=4, head_dim=128,
                                   **width)  # the embedding is read on the host: its size changes nothing here
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in transformers.LlamaModel(cfg).state_dict().items()}
    llm = os.path.join(folder, "llava_llama3_fp16.safetensors")
    save_file({"model." + k: (torch.randn(s) * 0.02).half() for k, s in shapes.items()}, llm)
    clip_tok = load_clip_tokenizer(folder)
    return llm, write_clip_l(folder, len(clip_tok), clip_tok.eos_token_id, clip_tok.bos_token_id)


def llava_stage(ctx) -> dict:
    from hystream.families.hunyuan_video.planning import TEMPLATE_TOKENS
    from hystream.families.hunyuan_video.planning import llama_activations as _llama_activations
    from hystream.families.hunyuan_video.prompt import template_tokens
    from hystream.loading import load_text_encoder

    llm, clip = write_llava(os.path.join(ctx.folder, "te"), ctx.small)
    # no budget: every layer streams (the automatic budget would keep them all resident on a big GPU)
    te = load_text_encoder(llm, clip, ctx.device, vram_budget_gb=None, prefetch_blocks=1)
    try:
        te.to_device()
        prompt = " ".join(["fox"] * (10 if ctx.small else 300))  # on the GPU: the full 256 user tokens
        tokens = len(template_tokens(prompt, te.encoder.llama_tokenizer, te.encoder.max_user_tokens).ids)
        with torch.no_grad(), StagePeak(ctx.device) as peak:
            te.encode(prompt, use_cache=False)
        s = te.streamer  # layers stream as their projections: the ring is two slots of the largest
        ring = 2 * max(s.block_bytes(i) for i in range(s.block_count()))
        streamed = s.block_count() - len(s.resident_blocks())
    finally:
        te.close()
    return {"units_streamed": streamed, "tokens": tokens, "real_template_tokens": TEMPLATE_TOKENS,
            **figures(ring + _llama_activations(tokens), peak)}


def vae_stage(ctx) -> dict:
    """One decoder tile (the default 256 px × 64 frames tile: latent 17 × 32 × 32)."""
    from hystream.families.hunyuan_video.demo import write_comfy_vae
    from hystream.loading import load_vae
    from hystream.planner import vae_tile_peak
    from hystream.vae import codec
    from hystream.vae.tiling import TileSpec

    vae = load_vae(write_comfy_vae(os.path.join(ctx.folder, "vae"), full_size=not ctx.small), ctx.device)
    try:
        vae.to_device()
        tile = (2, 8, 8) if ctx.small else (17, 32, 32)
        z = torch.randn(1, 16, *tile)
        with torch.no_grad(), StagePeak(ctx.device) as peak:
            codec.decode(vae.model, z, TileSpec(256, 64, 64, 16))  # random weights: no finiteness check
        dtype = next(vae.model.parameters()).dtype
    finally:
        vae.close()
    return {"tile": list(tile), "dtype": str(dtype), **figures(vae_tile_peak(tile, dtype), peak)}


def peaks(ctx, share) -> dict:
    result, failed = {}, []
    for name, stage in (("dit", dit_stage), ("llava", llava_stage), ("vae_tile", vae_stage)):
        if share.left() <= 0:
            result[name] = {"skipped": "time budget spent"}
            continue
        try:
            result[name] = stage(ctx)
        except Exception as e:  # noqa: BLE001 - the other stages' figures still count
            result[name] = {"error": f"{type(e).__name__}: {str(e)[:300]}", "trace": traceback.format_exc()[-1000:]}
            failed.append(f"{name}: {result[name]['error']}")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if failed:
        result["error"] = "; ".join(failed)
    return result
