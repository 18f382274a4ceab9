"""Video files through PyAV: FFV1/mkv (and avi) round trips are bit-exact; an mp4 keeps the frame
count and order; frame-rate normalisation picks the right frames; frame folders sort naturally."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from utils.errors import DataError
from utils.video_io import list_frames, read_video, video_to_tensor, write_video


@pytest.mark.parametrize("ext", [".mkv", ".avi"])
def test_ffv1_round_trip_is_bit_exact(tmp_path, ext):
    frames = np.random.default_rng(0).integers(0, 256, (9, 30, 44, 3), dtype=np.uint8)  # odd-free sizes, noise
    write_video(tmp_path / f"clip{ext}", frames, fps=30)
    back, info = read_video(tmp_path / f"clip{ext}")
    assert info.codec == "ffv1" and info.fps == 30
    np.testing.assert_array_equal(back, frames)
    # float tensors in, same levels out
    write_video(tmp_path / f"t{ext}", video_to_tensor(frames), fps=25)
    np.testing.assert_array_equal(read_video(tmp_path / f"t{ext}")[0], frames)


def _numbered(n):
    frames = np.zeros((n, 32, 48, 3), np.uint8)
    for i in range(n):
        frames[i] = 10 * i + 5  # frame i is flat grey 10 i + 5: lossy coding keeps the order readable
    return frames


def _ids(frames):
    return [int(round((f.mean() - 5) / 10)) for f in frames]


def test_mp4_frame_count_and_order(tmp_path):
    write_video(tmp_path / "clip.mp4", _numbered(23), fps=24)
    back, info = read_video(tmp_path / "clip.mp4")
    assert back.shape == (23, 32, 48, 3) and info.codec == "mpeg4"
    assert _ids(back) == list(range(23))
    assert info.timestamps[1] == pytest.approx(1 / 24)


def test_frame_rate_normalisation(tmp_path):
    write_video(tmp_path / "clip.mkv", _numbered(12), fps=24)
    half, info = read_video(tmp_path / "clip.mkv", fps=12)
    assert _ids(half) == [0, 2, 4, 6, 8, 10] and info.fps == 12
    double, _ = read_video(tmp_path / "clip.mkv", fps=48)
    assert _ids(double) == [i // 2 for i in range(24)]
    assert _ids(read_video(tmp_path / "clip.mkv", max_frames=5)[0]) == [0, 1, 2, 3, 4]


def test_errors_and_natural_order(tmp_path):
    with pytest.raises(DataError):
        read_video(tmp_path / "missing.mp4")
    with pytest.raises(DataError):
        write_video(tmp_path / "odd.mp4", np.zeros((2, 31, 32, 3), np.uint8))
    for name in ("f10.png", "f2.png", "f1.png"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_frames(tmp_path)] == ["f1.png", "f2.png", "f10.png"]
    assert isinstance(video_to_tensor(_numbered(2)), torch.Tensor)
