"""gpu_check section: ring attention's maths (parallel/ring.py) on this device, without ranks. What a ring rank
computes — a masked text part and uneven chunks of keys, each attended with the kernel's log-sum-exp and merged —
against one scaled_dot_product_attention over all the keys. On CUDA the log-sum-exp comes from the
memory-efficient kernel (its rows padded to 32: the query count here is not a multiple of 32)."""

from __future__ import annotations

import itertools


def ring_merge(ctx, share) -> dict:
    import torch

    from hystream.models.attention import attention
    from hystream.parallel.ring import attention_lse, merge_partial

    dev = ctx.device
    queries, image, text, heads, dim = (45, 70, 12, 4, 16) if ctx.small else (4001, 12000, 256, 24, 128)
    cuts = [0, image // 5, image // 2, image]  # uneven chunks, as a padded last share makes them
    g = torch.Generator().manual_seed(0)
    result = {"queries": queries, "keys": image + text, "heads": heads}
    for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        q, k, v = (torch.randn(2, n, heads, dim, generator=g).to(dev, dt) for n in (queries, image + text, image + text))
        mask = torch.ones(2, image + text, dtype=torch.bool, device=dev)
        mask[1, image + text // 2:] = False  # the second prompt's text is shorter (true CFG)
        want = attention(q, k, v, mask).float()
        out = merge_partial(None, None, *attention_lse(q, k[:, image:], v[:, image:], mask[:, image:]))
        for a, b in itertools.pairwise(cuts):
            out = merge_partial(*out, *attention_lse(q, k[:, a:b], v[:, a:b]))
        got = out[0].flatten(2)
        result[name] = {"max_relative": float((got - want).abs().max() / want.abs().max()),
                        "finite": bool(torch.isfinite(got).all())}
    result["ok"] = result["fp32"]["max_relative"] < 1e-5 and result["bf16"]["max_relative"] < 2e-2 and all(
        result[n]["finite"] for n in ("fp32", "bf16"))
    return result
