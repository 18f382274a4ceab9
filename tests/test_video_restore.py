"""scripts/restore_video.py: a video file in, a video (and frames) out, with a saved BasicVSR;
windowed (time) and tiled (space) restoration against the whole-clip pass."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from models.archs.basicvsr_arch import BasicVSR_arch, BasicVSR_config
from scripts.restore_video import restore_clip
from utils.video_io import read_video, video_to_tensor, write_video

ROOT = Path(__file__).resolve().parent.parent


def _net(flow="zero"):
    torch.manual_seed(0)
    return BasicVSR_arch(BasicVSR_config(num_feat=8, num_block=1, hr_channels=8, flow=flow)).eval()


def test_restore_video_cli_writes_video_and_frames(tmp_path):
    net = _net()
    net.save_pretrained(tmp_path / "model")
    frames = np.random.default_rng(0).integers(0, 256, (5, 12, 16, 3), dtype=np.uint8)
    write_video(tmp_path / "in.mkv", frames, fps=30)
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "restore_video.py"), "--model", str(tmp_path / "model"),
                          "--input", str(tmp_path / "in.mkv"), "--output", str(tmp_path / "out.mkv"),
                          "--frames_dir", str(tmp_path / "frames"), "--device", "cpu"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    video, info = read_video(tmp_path / "out.mkv")
    assert video.shape == (5, 48, 64, 3) and info.fps == 30
    assert sorted(p.name for p in (tmp_path / "frames").iterdir())[0] == "00000000.png"
    with torch.no_grad():
        ref = net(video_to_tensor(frames)[None])[0].clamp(0, 1)
    expected = (ref * 255).round().byte().permute(0, 2, 3, 1).numpy()
    assert np.abs(video.astype(int) - expected.astype(int)).max() <= 1


def test_windowed_and_tiled_restoration():
    net = _net("none")  # no recurrence: frames are independent, so time windows are exact
    clip = torch.rand(7, 3, 16, 16)
    whole = restore_clip(net, clip)
    windowed = restore_clip(net, clip, window=3, window_overlap=0)
    torch.testing.assert_close(windowed, whole, atol=1e-5, rtol=0)
    rec = _net("zero")
    tiled = restore_clip(rec, clip, window=4, window_overlap=2, tile=8, overlap=2)
    assert tiled.shape == (7, 3, 64, 64) and torch.isfinite(tiled).all()
