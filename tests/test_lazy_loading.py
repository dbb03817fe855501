"""Loading is lazy: a DiT file many blocks large never enters host memory whole.

Peak RSS is measured in a fresh subprocess (Linux VmHWM, reset through /proc/self/clear_refs after a
warm-up run of another tiny DiT, so library code pages touched on first use are not counted), mapped file
pages included. glibc's dynamic mmap threshold is pinned so that freed temporaries (the per-op weight
upcast) return to the OS instead of staying cached in the heap: we measure live memory, not malloc's cache.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import save_file

from hystream.families.hunyuan_video.config import DiTConfig
from tiny_dit import save_layout, tencent_state_dict

WIDE = DiTConfig(hidden=512, heads=4, depth_double=8, depth_single=16, depth_refiner=1, mlp_hidden=2048,
                 single_mlp_hidden=2048, refiner_mlp_hidden=2048, text_dim=64, pooled_dim=32)

CHILD = textwrap.dedent("""
    import ctypes, gc, json, sys, torch
    from hystream.loading import load_dit

    def rss():
        fields = dict(l.split(":", 1) for l in open("/proc/self/status"))
        return int(fields["VmHWM"].split()[0]) * 1024, int(fields["VmRSS"].split()[0]) * 1024

    def run(path, text_dim, pooled_dim):
        dit = load_dit(path)
        x = dict(x=torch.randn(1, 16, 1, 4, 4), timestep=torch.tensor([500.0]), txt=torch.randn(1, 4, text_dim),
                 pooled=torch.randn(1, pooled_dim), guidance=torch.tensor([6000.0]))
        with torch.no_grad():
            dit(**x)
        return dit

    torch.set_num_threads(1)
    run(sys.argv[2], 32, 24).close()  # warm-up on another model: kernels' code pages, thread pools
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = rss()[1]
    dit = load_dit(sys.argv[1])
    after_load = rss()[0] - base
    x = dict(x=torch.randn(1, 16, 1, 4, 4), timestep=torch.tensor([500.0]), txt=torch.randn(1, 4, 64),
             pooled=torch.randn(1, 32), guidance=torch.tensor([6000.0]))
    with torch.no_grad():
        dit(**x)
    after_forward = rss()[0] - base
    block = max(dit.streamer.block_bytes(i) for i in range(dit.streamer.block_count()))
    print(json.dumps(dict(load=after_load, forward=after_forward, block=block, fixed=dit.streamer.fixed_bytes())))
""")


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc peak-RSS reset")
def test_peak_rss_is_a_few_blocks(tmp_path):
    sd = {k: v.to(torch.bfloat16) for k, v in tencent_state_dict(WIDE).items()}
    path = tmp_path / "wide_dit_bf16.safetensors"
    save_file(sd, str(path))
    del sd
    file_size = path.stat().st_size
    warm, _ = save_layout(tencent_state_dict(), "tencent", str(tmp_path / "warm-up"))
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    result = subprocess.run([sys.executable, "-c", CHILD, str(path), warm], capture_output=True, text=True,
                            timeout=300, env=env, check=False)
    assert result.returncode == 0, result.stderr
    m = json.loads(result.stdout.strip().splitlines()[-1])
    block = m["block"]
    assert file_size > 15 * block  # the file is much larger than one block
    # Loading holds the small non-block parts only; running streams through a ring of two units (the largest
    # is a single block: double blocks stream as parts) and one read buffer, + the forward's own few MiB
    assert m["load"] < m["fixed"] + 0.5 * block, m
    assert m["forward"] < m["fixed"] + 3 * block + 8 * 2 ** 20, m
    assert m["forward"] < file_size / 3, m
