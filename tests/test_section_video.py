"""sampling/section_video.py: decoded sections cross-faded as diffusers' FramePack pipeline appends them
(its `_soft_append`, called here as the reference), in both directions, with frames handed out in display
order; memory held stays one section's frames; the spill of a backwards video is removed; and a long FramePack
run on the CPU keeps the process's memory flat as sections are added."""

import json
import os
import statistics
import subprocess
import sys

import pytest
import torch

from hystream.sampling.section_video import HOLD, SectionVideo


def soft_append(history, current, overlap):
    from diffusers import HunyuanVideoFramepackPipeline

    # [F, H, W, 3] → the pipeline's [B, C, F, H, W] and back
    def to(x):
        return x.permute(3, 0, 1, 2)[None]

    out = HunyuanVideoFramepackPipeline._soft_append(None, to(history), to(current), overlap)
    return out[0].permute(1, 2, 3, 0)


@pytest.mark.parametrize("backwards, spill_as", [(False, None), (True, torch.float16), (True, torch.uint8)])
@pytest.mark.parametrize("overlap, lengths", [(9, [9, 21, 21, 25]), (5, [13, 13, 13, 13, 13]), (1, [2, 5, 5])])
def test_matches_the_references_soft_append(tmp_path, backwards, spill_as, overlap, lengths):
    g = torch.Generator().manual_seed(len(lengths))
    sections = [torch.rand(n, 4, 6, 3, generator=g) * 1.4 - 0.2 for n in lengths]  # unclamped, as decoded
    want = None
    for s in sections:
        want = s if want is None else (soft_append(s, want, overlap) if backwards else soft_append(want, s, overlap))
    want = want[:(want.shape[0] - 1) // 4 * 4 + 1].clamp(0, 1)
    out, held = [], []
    video = SectionVideo(overlap, out.append, backwards=backwards, spill_dir=str(tmp_path),
                         **({"spill_as": spill_as} if spill_as else {}))
    for s in sections:
        video.add(s)
        held.append(video.pending.shape[0])
        if not backwards:
            assert sum(f.shape[0] for f in out) == video.frames  # forward: written as it grows
    assert not backwards or not out  # backwards: nothing reaches the sink before the end
    video_head = video.pending.shape[0]  # the head never spilled (a backwards video's first frames)
    count = video.finish()
    got = torch.cat(out)
    assert count == got.shape[0] == want.shape[0]
    if spill_as == torch.uint8:  # frames that waited on disk are 8-bit levels, as the mp4 gets them
        want = torch.cat([want[:video_head], (want[video_head:] * 255).round() / 255])
    assert (got - want).abs().max().item() <= (2.5e-4 if spill_as == torch.float16 else 1e-6)
    assert max(held) <= overlap + HOLD  # one overlap (and the cut's 3 frames) held, never the video
    assert os.listdir(tmp_path) == []  # the spill is gone


def rss() -> int:
    """Resident bytes after handing freed heap back to the OS (glibc's malloc_trim): what is still held, not
    what the allocator keeps cached from the last section's buffers."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc: measured as it is
        pass
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def long_run(folder: str, order: str = "inverted") -> dict:
    """40 sections of one latent frame each, sampled, decoded and cross-faded; the process's RSS after each."""
    from hystream import long_video, pipeline
    from hystream.loading import load_dit, load_vae
    from tiny_framepack import reference_model, save_layout
    from tiny_vae import reference_vae, save_vae

    dit = load_dit(save_layout(reference_model(), "kijai_bf16", os.path.join(folder, "dit"))[0])
    vae = load_vae(save_vae(reference_vae(), "comfy", os.path.join(folder, "vae")))
    g = torch.Generator().manual_seed(0)
    positive = [[torch.randn(1, 6, 32, generator=g), {"pooled_output": torch.randn(1, 24, generator=g)}]]
    settings = long_video.LongVideoSettings(frames=40, window=1, steps=1, seed=1, order=order)
    frames, sizes, longest = [0], {}, [0]

    def decode(latents):
        longest[0] = max(longest[0], latents.shape[2])
        return pipeline.decode(vae, latents, clamp=False)

    try:
        with torch.inference_mode():
            count = long_video.sample_long_video(
                dit, positive, None, torch.randn(1, 16, 1, 20, 20, generator=g), torch.randn(1, 5, 128, generator=g),
                settings, decode, lambda f: frames.__setitem__(0, frames[0] + f.shape[0]), spill_dir=folder,
                on_section=lambda k, n: sizes.__setitem__(k - 1, rss()))
    finally:
        dit.close()
    return {"sections": len(sizes), "count": count, "frames": frames[0], "rss": sizes, "longest": longest[0]}


def test_a_long_framepack_run_keeps_memory_flat(tmp_path):
    """In a fresh process (the suite's own allocations would blur it): the RSS around section 35 is within 12 MiB
    of the RSS around section 10, where keeping the video would add 30 MiB; the history, the decoded section and
    the spill of this backwards video are bounded."""
    code = (f"import json, test_section_video as t; print('RESULT ' + json.dumps(t.long_run({str(tmp_path)!r})))")
    r = subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(__file__), capture_output=True, text=True,
                       timeout=600, check=False)
    line = next((x for x in r.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line, r.stderr[-3000:]
    out = json.loads(line[7:])
    assert out["sections"] == 40 and out["count"] == out["frames"] == 161  # 4 frames per latent frame + the start
    assert out["longest"] <= 3  # a section decodes itself and its neighbour, never the whole history
    sizes = [v for _, v in sorted((int(k), v) for k, v in out["rss"].items())]
    # medians of ten sections each: a section's transient buffers come and go, a kept video only grows
    early, late = statistics.median(sizes[5:15]), statistics.median(sizes[30:40])
    assert late - early < 12 << 20, [v >> 20 for v in sizes]
