"""mp4 in and out: a failed write (full disk, file-size limit, unwritable place) is an error saying where
and why and leaves no partial file; settings are checked up front; reading checks the decoded size
against the RAM left and refuses what ffmpeg cannot read."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from hystream.errors import InputError, OutputError
from hystream.video_io import check_output_settings, read_video, write_mp4


def frames(n=9, h=64, w=80):
    t = torch.linspace(0, 1, n)[:, None, None, None]
    return (torch.rand(n, h, w, 3) * 0.3 + t * 0.7).clamp(0, 1)


def test_round_trip_and_odd_sides(tmp_path):
    out = write_mp4(frames(9, 63, 81), str(tmp_path / "v.mp4"), fps=12)
    video, fps = read_video(out)
    assert video.shape == (9, 64, 82, 3) and fps == 12.0  # padded to even sides for yuv420p
    assert [f for f in os.listdir(tmp_path) if f.startswith(".partial")] == []


def test_a_write_that_fails_on_disk_is_an_error_and_leaves_nothing(tmp_path):
    """ffmpeg hits a file-size limit half-way (as a full disk would stop it): the writer must say so,
    name the file, and remove what it wrote, instead of reporting success."""
    script = textwrap.dedent(f"""
        import resource, sys, torch
        from hystream.errors import OutputError
        from hystream.video_io import write_mp4
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        frames = torch.rand(24, 128, 160, 3)
        try:
            write_mp4(frames, {str(tmp_path / 'full.mp4')!r})
        except OutputError as e:
            print("OUTPUT-ERROR", e)
            sys.exit(0)
        print("NO ERROR")
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False)
    assert "OUTPUT-ERROR" in r.stdout, r.stdout + r.stderr
    assert "full.mp4" in r.stdout and "What to do" in r.stdout
    assert os.listdir(tmp_path) == []  # neither the target nor the temporary file


@pytest.mark.parametrize("path, fps, crf, words", [
    ("v.avi", 24, 19, "ending in .mp4"),
    ("v.mp4", 0, 19, "fps above 0"),
    ("v.mp4", 500, 19, "fps above 0"),
    ("v.mp4", 24, 60, "crf a whole number"),
    ("v.mp4", 24, 18.5, "crf a whole number"),
    ("", 24, 19, "ending in .mp4"),
])
def test_output_settings_are_checked_first(tmp_path, path, fps, crf, words):
    with pytest.raises(InputError, match=words):
        check_output_settings(str(tmp_path / path) if path else path, fps, crf)


def test_output_under_a_file_is_refused(tmp_path):
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        check_output_settings(str(tmp_path / "a_file" / "sub" / "v.mp4"), 24, 19)
    os.makedirs(tmp_path / "dir.mp4")
    with pytest.raises(InputError, match="a folder"):
        check_output_settings(str(tmp_path / "dir.mp4"), 24, 19)


def test_reading_checks_the_decoded_size_against_free_ram(tmp_path, monkeypatch):
    path = write_mp4(frames(33, 64, 80), str(tmp_path / "v.mp4"))
    import hystream.video_io as vio

    need = 33 * 64 * 80 * 3 * vio.DECODE_BYTES_PER_VALUE
    monkeypatch.setattr(vio, "available_ram_bytes", lambda: need // 2)
    with pytest.raises(InputError) as info:
        read_video(path)
    assert "max_frames" in str(info.value) and "33 frames of 80×64" in str(info.value)
    video, _ = read_video(path, max_frames=9)  # what fits is read
    assert video.shape[0] == 9


@pytest.mark.parametrize("content", [b"", b"not a video at all", b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64])
def test_unreadable_videos_are_our_error(tmp_path, content):
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    with pytest.raises(InputError, match="What to do"):
        read_video(str(path))
