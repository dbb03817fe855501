"""The stored weight formats HyStream decodes at use: GGUF's quantisation types (ggml's block formats).

A quantised matrix [rows, cols] is stored row by row, each row as cols / block_size blocks of type_size
bytes, so any range of rows decodes on its own (what the fused projections need). Type ids and sizes are
ggml's (GGMLQuantizationType).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class QuantKind:
    name: str
    type_id: int
    block_size: int  # values per block
    type_size: int  # bytes per block

    def row_bytes(self, cols: int) -> int:
        return cols // self.block_size * self.type_size


QK_K = 256
KINDS = {k.name: k for k in (
    QuantKind("Q4_0", 2, 32, 2 + 16),
    QuantKind("Q4_1", 3, 32, 2 + 2 + 16),
    QuantKind("Q5_0", 6, 32, 2 + 4 + 16),
    QuantKind("Q5_1", 7, 32, 2 + 2 + 4 + 16),
    QuantKind("Q8_0", 8, 32, 2 + 32),
    QuantKind("Q2_K", 10, QK_K, QK_K // 16 + QK_K // 4 + 2 + 2),
    QuantKind("Q3_K", 11, QK_K, QK_K // 8 + QK_K // 4 + 12 + 2),
    QuantKind("Q4_K", 12, QK_K, 2 + 2 + 12 + QK_K // 2),
    QuantKind("Q5_K", 13, QK_K, 2 + 2 + 12 + QK_K // 8 + QK_K // 2),
    QuantKind("Q6_K", 14, QK_K, QK_K // 2 + QK_K // 4 + QK_K // 16 + 2),
)}
BY_ID = {k.type_id: k for k in KINDS.values()}
# plain float types a GGUF file may hold (stored and used as torch dtypes, no decoding)
FLOAT_IDS = {0: "F32", 1: "F16", 30: "BF16"}

# the types city96's HunyuanVideo GGUF files are mostly made of (a Q4_K_M file: mostly Q4_K), for planning
PLAN_TYPES = ("Q8_0", "Q6_K", "Q5_K", "Q5_0", "Q4_K", "Q4_0", "Q3_K", "Q2_K")
