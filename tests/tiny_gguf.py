"""GGUF files as ComfyUI-GGUF's converter (and llama.cpp's) write them, for the tests: tiny models with
tensors in mixed quantisation types, plus their dequantised twins (what the GGUF decodes to, as float32)."""

from __future__ import annotations

import zlib

import numpy as np
import torch

QUANTISABLE = ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1")  # what gguf.quants.quantize implements
HALF_FIELDS = {"Q2_K": (80, 82), "Q3_K": (108,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,)}
# typical magnitudes of the fp16 scale fields, so random K-quant blocks decode to weights of ~0.05
FIELD_SCALE = {"Q2_K": 0.004, "Q3_K": 0.0006, "Q4_K": 0.0006, "Q5_K": 0.0003, "Q6_K": 0.00003}


def quantise(values: np.ndarray, qtype: str) -> np.ndarray:
    """[rows, cols] float32 → the bytes of `qtype` [rows, row_bytes]. Types the gguf package cannot quantise
    (the K-quants) get random valid blocks of realistic magnitude instead, seeded by the values (so a
    tensor quantises alike whatever its name)."""
    import gguf

    kind = getattr(gguf.GGMLQuantizationType, qtype)
    if qtype in QUANTISABLE:
        return gguf.quants.quantize(values.astype(np.float32), kind)
    block, size = gguf.GGML_QUANT_SIZES[kind]
    rng = np.random.default_rng(zlib.crc32(np.ascontiguousarray(values, dtype=np.float32).tobytes()))
    data = rng.integers(0, 256, size=(values.shape[0], values.shape[1] // block * size), dtype=np.uint8)
    blocks = data.reshape(-1, size)
    for off in HALF_FIELDS[qtype]:
        half = np.abs(rng.normal(0, FIELD_SCALE[qtype], size=(blocks.shape[0], 1))).astype(np.float16)
        blocks[:, off:off + 2] = half.view(np.uint8)
    return data


def dequantised(data: np.ndarray, qtype: str, shape) -> torch.Tensor:
    import gguf

    values = gguf.quants.dequantize(data, getattr(gguf.GGMLQuantizationType, qtype)).astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(values)).reshape(shape)


def write_gguf(path: str, tensors: dict, arch: str | None = "hyvid", arrays: dict | None = None,
               raw: dict | None = None) -> str:
    """tensors: {name: (float tensor, type)} with type F32 / F16 / BF16 or a quant type; raw: {name:
    (uint8 bytes, gguf type id, logical shape)} written as given (for unsupported types); arrays: extra
    metadata arrays (e.g. comfy.gguf.orig_shape.<name>)."""
    import gguf

    writer = gguf.GGUFWriter(path, arch=arch or "pig")
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for key, value in (arrays or {}).items():
        writer.add_array(key, list(value))
    for name, (t, qtype) in tensors.items():
        values = t.detach().float().numpy()
        if qtype == "F32":
            writer.add_tensor(name, values.astype(np.float32))
        elif qtype == "F16":
            writer.add_tensor(name, values.astype(np.float16))
        elif qtype == "BF16":
            bits = t.detach().to(torch.bfloat16).contiguous().view(torch.int16).numpy().view(np.uint8)
            writer.add_tensor(name, bits.reshape(*values.shape[:-1], -1), raw_dtype=gguf.GGMLQuantizationType.BF16)
        else:
            data = quantise(values.reshape(-1, values.shape[-1]), qtype)
            writer.add_tensor(name, data, raw_dtype=getattr(gguf.GGMLQuantizationType, qtype))
    for name, (data, type_id, _shape) in (raw or {}).items():
        writer.add_tensor(name, data, raw_dtype=gguf.GGMLQuantizationType(type_id))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def twin(tensors: dict) -> dict[str, torch.Tensor]:
    """What each tensor of write_gguf decodes to, as float32: the model to compare the GGUF with."""
    out = {}
    for name, (t, qtype) in tensors.items():
        if qtype == "F32":
            out[name] = t.detach().float()
        elif qtype in ("F16", "BF16"):
            out[name] = t.detach().to(torch.float16 if qtype == "F16" else torch.bfloat16).float()
        else:
            values = t.detach().float().numpy()
            data = quantise(values.reshape(-1, values.shape[-1]), qtype)
            out[name] = dequantised(data, qtype, t.shape)
    return out


BLOCK_TYPES = ("Q8_0", "Q4_0", "Q4_K", "Q6_K", "Q5_K", "Q3_K", "Q2_K", "Q5_0", "Q4_1", "Q5_1")


def dit_types(sd: dict, prefix: str = "") -> dict:
    """city96's choices for a HunyuanVideo DiT: 1-D and the 5-D patch embedding unquantised (F32), the
    small embedders in F16/BF16, every block Linear in a quant type — mixed across the file."""
    out, i = {}, 0
    for name, t in sd.items():
        if t.dim() == 1 or name == "img_in.proj.weight":
            qtype = "F32"
        elif not name.startswith(("double_blocks.", "single_blocks.", "txt_in.individual_token_refiner.")):
            qtype = "F16" if "time_in" in name or "vector_in" in name else "BF16"
        else:
            qtype = BLOCK_TYPES[i % len(BLOCK_TYPES)]
            i += 1
        out[prefix + name] = (t, qtype)
    return out


def llama_cpp_permute(w: torch.Tensor, heads: int) -> torch.Tensor:
    """What llama.cpp's converter does to q/k rows (interleaving each head's rotary halves)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


LLAMA_CPP = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}


def llama_cpp_tensors(hf: dict, heads: int, kv_heads: int, qtype: str = "Q8_0") -> dict:
    """A Hugging Face Llama state dict (LlamaModel names) in llama.cpp's names, q/k permuted, Linears in
    `qtype`, the embedding table Q8_0, norms F32 — as a LLaVA-Llama-3 GGUF holds them."""
    import re

    out = {}
    for name, t in hf.items():
        if name == "embed_tokens.weight":
            out["token_embd.weight"] = (t, "Q8_0")
        elif name == "norm.weight":
            out["output_norm.weight"] = (t, "F32")
        elif (m := re.match(r"layers\.(\d+)\.(.+)\.(weight|bias)$", name)):
            base = LLAMA_CPP[m.group(2)]
            if base in ("attn_q", "attn_k"):
                t = llama_cpp_permute(t, heads if base == "attn_q" else kv_heads)
            out[f"blk.{m.group(1)}.{base}.{m.group(3)}"] = (t, "F32" if t.dim() == 1 else qtype)
    return out
