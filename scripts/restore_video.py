#!/usr/bin/env python
"""Restore a video (or a folder of frames) with a trained clip network (video SR: BasicVSR,
BasicVSR++, IART; any ``clip2clip`` network).

    python scripts/restore_video.py --model DIR_OR_HUB_ID --input IN.mp4|FRAME_DIR --output OUT.mkv
        [--frames_dir DIR] [--fps F] [--window N] [--window_overlap N] [--tile N] [--overlap N]
        [--device cpu|cuda|auto]

--input       a video file (.mp4/.mkv/.avi/.mov/.webm; frames in presentation order, ``--fps``
              resamples to a constant rate) or a folder of frames (natural order: f2 before f10).
--output      the restored video; the codec follows the extension: .mkv/.avi FFV1 (lossless),
              .mp4 MPEG-4 (lossy). Its frame rate is the input's (``--fps``; 25 for frame folders).
--frames_dir  also write every restored frame as an 8-bit PNG (input frame names for folders,
              00000000.png … for videos).
--window N    restore N frames at a time (bounded memory), windows overlapping by
              ``--window_overlap`` (default N/4) and cross-faded (utils/tiling.py); default: the
              whole clip in one pass, as the VSR papers evaluate.
--tile N      also tile each window in space (N×N LR pixels, ``--overlap`` default N/8).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from utils.errors import DataError, run_cli  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--revision", default=None)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--frames_dir", default=None)
    parser.add_argument("--fps", type=float, default=None)
    parser.add_argument("--window", type=int, default=None)
    parser.add_argument("--window_overlap", type=int, default=None)
    parser.add_argument("--tile", type=int, default=None)
    parser.add_argument("--overlap", type=int, default=None)
    parser.add_argument("--device", default="auto")
    return parser


def read_input(path: Path, fps: float | None):
    """``(frames T×3×H×W float, names, fps)``."""
    import numpy as np
    import torch

    from utils.image_io import read_image
    from utils.video_io import is_video, list_frames, read_video, video_to_tensor

    if path.is_file() and is_video(path):
        arr, info = read_video(path, fps=fps)
        return video_to_tensor(arr), [f"{i:08d}.png" for i in range(len(arr))], info.fps or 25.0
    if path.is_dir():
        files = list_frames(path)
        if not files:
            raise DataError(f"no frames in {path}")
        frames = torch.stack([torch.from_numpy(np.ascontiguousarray(read_image(f).transpose(2, 0, 1))) for f in files])
        return frames, [f.with_suffix(".png").name for f in files], fps or 25.0
    raise DataError(f"--input {path} is neither a video file nor a folder of frames")


def restore_clip(net, frames, window=None, window_overlap=None, tile=None, overlap=None):
    """The network's output for a T×3×H×W clip → T×3×sH×sW (unclamped)."""
    import torch

    from utils.tiling import tiled_clip_forward

    io = net.io
    if io.kind != "clip2clip":
        raise DataError(f"restore_video.py restores with clip→clip networks; this one is {io.kind!r} "
                        f"(use scripts/restore.py for image networks)")
    x = frames[None].to(next(net.parameters()).device)
    with torch.inference_mode():
        if window is None and tile is None:
            return net(x)[0].cpu()
        w_over = window_overlap if window_overlap is not None else ((window or 0) // 4)
        sp_over = overlap if overlap is not None else ((tile or 0) // 8)
        return tiled_clip_forward(net, x, window, w_over, patch_size=tile, spatial_overlap=sp_over,
                                  scale=io.scale)[0].cpu()


def main(argv=None) -> int:
    import torch

    from scripts.restore import load_network, resolve_model
    from utils.image_io import quantize, write_image
    from utils.video_io import write_video

    args = build_parser().parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    net = load_network(resolve_model(args.model, args.revision), device)
    frames, names, fps = read_input(Path(args.input), args.fps)
    out = quantize(restore_clip(net, frames, args.window, args.window_overlap, args.tile, args.overlap).float())
    write_video(args.output, out, fps=fps)
    if args.frames_dir:
        folder = Path(args.frames_dir)
        for name, frame in zip(names, out):
            write_image(folder / name, frame.permute(1, 2, 0).numpy())
    print(f"restored {len(names)} frames -> {args.output}")
    return 0


if __name__ == "__main__":
    run_cli(main)
