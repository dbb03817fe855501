"""Peak device memory of the text-encoder stage at full size (LLaVA-Llama-3-8B + CLIP-L), without a GPU.

Builds the real model classes with the real shapes on the meta device (our LlamaStates wrapper: the 30
layers that run, transformers' CLIPTextModel) and reads the per-layer weight bytes from them; the
activation peak of the Llama pass comes from the fake-tensor estimator (shared/tools/memest, validated
against real allocations) run on those modules with fake CUDA tensors. Streamed stage peak =
ring (prefetch + 1 slots of a layer's largest projection: layers stream as their parts) + CLIP-L (resident) + activations. JSON line last.

    python bench/text_encoder_memory.py [--tokens 351] [--prefetch 1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

GIB = 1024 ** 3
MEMEST = os.environ.get("MEMEST_PATH", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "tools", "memest"))


def llama_config():
    from hystream.families.hunyuan_video.text_loader import LLAVA
    from hystream.models.llama_encoder import infer_llama_config

    shapes = {"embed_tokens.weight": (128320, 4096), "layers.0.self_attn.q_proj.weight": (4096, 4096),
              "layers.0.self_attn.k_proj.weight": (1024, 4096), "layers.0.mlp.gate_proj.weight": (14336, 4096)}
    shapes.update({f"layers.{i}.input_layernorm.weight": (4096,) for i in range(32)})
    return infer_llama_config(shapes, "LLaVA-Llama-3-8B", LLAVA)


def clip_bytes(dtype) -> int:
    from hystream.models.clip_encoder import ClipPooled, infer_clip_config

    shapes = {"embeddings.token_embedding.weight": (49408, 768), "embeddings.position_embedding.weight": (77, 768),
              "encoder.layers.0.mlp.fc1.weight": (3072, 768)}
    shapes.update({f"encoder.layers.{i}.layer_norm1.weight": (768,) for i in range(12)})
    clip = ClipPooled(infer_clip_config(shapes, "CLIP-L", eos_token_id=49407, bos_token_id=49406, pad_token_id=49407))
    return sum(p.numel() for p in clip.model.parameters()) * torch.empty((), dtype=dtype).element_size()


def layer_bytes(config, weight_bytes: dict[str, int]) -> int:
    """Bytes of one decoder layer with Linear weights at `weight_bytes["linear"]` per element and the rest
    at `weight_bytes["other"]` (fp8 files keep norms in fp16 and add a 4-byte scale per Linear)."""
    from hystream.models.layers import Linear
    from hystream.models.llama_encoder import LlamaStates

    layer = LlamaStates(config, torch.device("cpu")).layers[0]
    total = 0
    for name, mod in layer.named_modules():
        for pname, p in mod.named_parameters(recurse=False):
            linear = isinstance(mod, Linear) and pname == "weight"
            total += p.numel() * weight_bytes["linear" if linear else "other"] + (4 if linear and weight_bytes.get("scale") else 0)
    return total


def activation_peak(config, tokens: int, dtype) -> int | None:
    if not os.path.isdir(MEMEST):
        return None
    sys.path.insert(0, MEMEST)
    from estimate import LiveBytes, attention_mode

    from hystream.memory_probe import fake_mode
    from hystream.models.llama_encoder import LlamaStates
    from hystream.offload.binding import bind

    with fake_mode():
        model = LlamaStates(config, torch.device("cuda"))
        for layer in model.layers:
            bind(layer, {n: torch.empty(p.shape, dtype=dtype, device="cuda") for n, p in layer.named_parameters()})
        embeds = torch.empty(1, tokens, config.hidden_size, dtype=dtype, device="cuda")
        lb = LiveBytes(round_to=512)
        weights = lb.track(model)  # every layer bound at once here; the stage holds only the ring
        lb.track(embeds)
        with attention_mode("stub"), lb:
            out = model(embeds)
        del out
    return lb.peak - weights


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=351, help="template (95) + 256 user tokens")
    ap.add_argument("--prefetch", type=int, default=1)
    args = ap.parse_args()
    config = llama_config()
    fp16 = layer_bytes(config, {"linear": 2, "other": 2})
    fp8 = layer_bytes(config, {"linear": 1, "other": 2, "scale": 4})
    clip = clip_bytes(torch.float16)
    act = activation_peak(config, args.tokens, torch.float16)
    ring = args.prefetch + 1
    from hystream.loaders.decoder_layers import ring_bytes
    from hystream.models.llama_encoder import LlamaStates

    layer = LlamaStates(config, torch.device("cpu")).layers[0]  # streamed projection by projection: a slot is one
    parts = {"fp16": ring_bytes(layer, fp8=False, slots=ring), "fp8_scaled": ring_bytes(layer, fp8=True, slots=ring)}
    report = {"bench": "text_encoder_memory", "layers_run": config.num_hidden_layers, "tokens": args.tokens,
              "layer_gib_fp16": round(fp16 / GIB, 4), "layer_gib_fp8_scaled": round(fp8 / GIB, 4),
              "clip_l_gib": round(clip / GIB, 4), "activations_gib": None if act is None else round(act / GIB, 4),
              "ring_slots": ring, "resident_all_layers_gib_fp16": round(config.num_hidden_layers * fp16 / GIB, 3)}
    for name, lb in (("fp16", fp16), ("fp8_scaled", fp8)):
        report[f"ring_gib_{name}"] = round(parts[name] / GIB, 4)
        report[f"stage_peak_gib_{name}"] = round((parts[name] + clip + (act or 0)) / GIB, 3)
        report[f"stage_peak_gib_{name}_whole_layers"] = round((ring * lb + clip + (act or 0)) / GIB, 3)
    for k, v in report.items():
        print(f"{k:32s} {v}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
