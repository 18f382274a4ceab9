"""Video files and frame folders (PyAV, pinned in requirements.txt).

* ``read_video(path, fps=None)``: every frame in presentation order (sorted by timestamp, not by
  decode order), RGB uint8 T×H×W×3, plus the stream's frame rate and timestamps. ``fps`` resamples
  to a constant rate: output frame k is the last frame shown at time ``k / fps`` (the
  frame-accurate "hold" rule of a player; variable-frame-rate files come out regular).
* ``write_video(path, frames, fps)``: the codec from the extension — ``.mkv``/``.avi``: FFV1 in
  packed RGB (``bgr0``), **lossless, bit-exact** (use it for data); ``.mp4``: MPEG-4 part 2 in
  yuv420p (lossy; widely playable; even sizes needed).
* ``list_frames(folder)``: the image files of a frame folder in natural order
  (``frame_2.png`` before ``frame_10.png``), never ``os.listdir`` order (IART's ``demo.py`` bug).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from utils.errors import DataError

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v")
CODECS = {".mkv": ("ffv1", "bgr0"), ".avi": ("ffv1", "bgr0"), ".mp4": ("mpeg4", "yuv420p"),
          ".mov": ("mpeg4", "yuv420p"), ".m4v": ("mpeg4", "yuv420p")}


def is_video(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def natural_key(name: str):
    """Sort key: digit runs compared as numbers (``f2`` < ``f10``)."""
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", str(name))]


def list_frames(folder: str | os.PathLike) -> list[Path]:
    """Image files directly in ``folder``, in natural order."""
    from utils.image_io import IMAGE_EXTENSIONS

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"frame folder not found: {folder}")
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files, key=lambda p: natural_key(p.name))


@dataclass
class VideoInfo:
    fps: float                 # the stream's average frame rate
    timestamps: list[float]    # seconds, per returned frame (after resampling: k / fps)
    width: int
    height: int
    codec: str


def _require_av():
    try:
        import av
    except ImportError as exc:  # pragma: no cover - pinned in requirements.txt
        raise DataError("reading/writing video files needs PyAV: pip install av (pinned in requirements.txt)") from exc
    return av


def read_video(path: str | os.PathLike, fps: float | None = None, max_frames: int | None = None):
    """``(frames, info)``: RGB uint8 T×H×W×3 in presentation order (module docstring)."""
    av = _require_av()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"video not found: {path}")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError(f"{path}: no video stream")
            stream = container.streams.video[0]
            rate = float(stream.average_rate or stream.guessed_rate or 0) or None
            tb = stream.time_base
            decoded = []
            for i, frame in enumerate(container.decode(stream)):
                t = float(frame.pts * tb) if frame.pts is not None else (i / rate if rate else float(i))
                decoded.append((t, i, frame.to_ndarray(format="rgb24")))
            codec = stream.codec_context.name
            tol = float(tb) if tb else 1e-6  # timestamps are rounded to the container's time base
    except av.FFmpegError as exc:
        raise DataError(f"cannot decode video {path}: {exc}") from exc
    if not decoded:
        raise DataError(f"{path}: the video has no frames")
    decoded.sort(key=lambda e: (e[0], e[1]))
    times = [e[0] for e in decoded]
    if fps is not None:
        if not fps > 0:
            raise DataError(f"read_video: fps must be > 0, got {fps}")
        t0, end = times[0], times[-1] + (1.0 / rate if rate else 0.0)
        count = max(1, int(np.floor((end - t0 + tol) * fps)))
        picks, j = [], 0
        for k in range(count):
            tk = t0 + k / fps
            while j + 1 < len(times) and times[j + 1] <= tk + tol:
                j += 1
            picks.append(j)
        decoded = [decoded[j] for j in picks]
        times = [t0 + k / fps for k in range(count)]
    if max_frames is not None:
        decoded, times = decoded[:max_frames], times[:max_frames]
    frames = np.stack([e[2] for e in decoded])
    return frames, VideoInfo(fps=float(fps or rate or 0.0), timestamps=times, width=frames.shape[2],
                             height=frames.shape[1], codec=codec)


def _as_uint8_frames(frames) -> np.ndarray:
    if isinstance(frames, torch.Tensor):  # T×C×H×W float in [0, 1]
        from utils.image_io import quantize_levels

        if frames.dim() != 4:
            raise DataError(f"write_video: expected T×C×H×W frames, got shape {tuple(frames.shape)}")
        frames = quantize_levels(frames, 8).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise DataError(f"write_video: expected uint8 T×H×W×3 frames, got {frames.dtype} {frames.shape}")
    return np.ascontiguousarray(frames)


def write_video(path: str | os.PathLike, frames, fps: float = 25.0, codec: str | None = None,
                pix_fmt: str | None = None, bit_rate: int | None = None) -> Path:
    """Write RGB frames (uint8 T×H×W×3, or a float T×C×H×W tensor in [0, 1]) to ``path``."""
    av = _require_av()
    path = Path(path)
    frames = _as_uint8_frames(frames)
    default = CODECS.get(path.suffix.lower())
    if default is None and codec is None:
        raise DataError(f"write_video: unknown container {path.suffix!r} (known: {', '.join(CODECS)})")
    codec = codec or default[0]
    pix_fmt = pix_fmt or (default[1] if default and codec == default[0] else "yuv420p")
    if pix_fmt == "yuv420p" and (frames.shape[1] % 2 or frames.shape[2] % 2):
        raise DataError(f"write_video: {codec}/yuv420p needs even frame sizes, got {frames.shape[2]}x{frames.shape[1]}")
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(100000)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        if bit_rate:
            stream.bit_rate = int(bit_rate)
        elif codec == "mpeg4":
            stream.bit_rate = 8_000_000
        for i, arr in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def video_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 T×H×W×3 → float32 T×3×H×W in [0, 1]."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(255.0)
