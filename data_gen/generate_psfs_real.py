#!/usr/bin/env python
"""Build a PSF field file from captured point-source images: DIR/psfs.h5 (+ psf_grid.png).

    python data_gen/generate_psfs_real.py --captures DIR --save_dir DIR [--psf_size k] [--threshold_sigma 3]

Captures: one image per grid node; the last two integers of the file name are the node's row and
column (0-based), e.g. psf_03_07.png. Per capture: background (median) subtraction, spot detection,
sub-pixel centring by centroid, support masking, normalisation to sum 1 per channel. With full
sensor frames (default) H_img is fitted to the measured spot positions. Details: docs/optics.md.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from psf.output import OneLineParser  # noqa: E402
from utils.errors import run_cli  # noqa: E402


def parse_args(argv=None):
    doc = __doc__.split("\n\n", 1)
    p = OneLineParser(description=doc[0], epilog=doc[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--captures", required=True, help="folder of point-source images named by grid position")
    p.add_argument("--save_dir", required=True, help="output folder (psfs.h5, psf_grid.png)")
    p.add_argument("--psf_size", type=int, default=33, help="odd PSF window k in pixels (default 33)")
    p.add_argument("--threshold_sigma", type=float, default=3.0,
                   help="support threshold in noise sigmas (smoothed luminance; default 3)")
    p.add_argument("--dilate_px", type=int, default=2, help="grow the support by this many pixels (default 2)")
    p.add_argument("--integer_centering", action="store_true",
                   help="centre on the nearest pixel only (no sub-pixel interpolation)")
    p.add_argument("--node_positions", choices=("fit", "corners"), default="fit",
                   help="fit: H_img fitted to the spot positions in the frames (default); "
                        "corners: default corner-to-corner grid over --sensor_res")
    p.add_argument("--sensor_res", nargs=2, type=int, metavar=("H", "W"), help="default: the capture frame size")
    p.add_argument("--wavelengths_nm", nargs="+", type=float, help="channel wavelengths to record (optional)")
    p.add_argument("--pixel_pitch_um", type=float, help="pixel pitch to record (optional)")
    p.add_argument("--object_spacing_mm", type=float, default=1.0,
                   help="point-source grid spacing in the object plane, for H_obj (default 1.0)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing DIR/psfs.h5")
    p.add_argument("--no_previews", action="store_true", help="skip psf_grid.png")
    return p.parse_args(argv)


def main() -> int:
    args = parse_args()
    from psf.field import save_psf_field
    from psf.output import staged_output
    from psf.real import psf_field_from_captures

    field = psf_field_from_captures(
        args.captures, psf_size=args.psf_size, threshold_sigma=args.threshold_sigma, dilate_px=args.dilate_px,
        subpixel=not args.integer_centering, node_positions=args.node_positions, sensor_res=args.sensor_res,
        wavelengths_nm=args.wavelengths_nm, pixel_pitch_um=args.pixel_pitch_um,
        object_spacing_mm=args.object_spacing_mm, progress=True)
    field.attrs["args"] = json.dumps({"command": shlex.join(["data_gen/generate_psfs_real.py", *sys.argv[1:]]),
                                      **{k: v for k, v in vars(args).items()}})
    with staged_output(args.save_dir, overwrite=args.overwrite) as stage:
        if not args.no_previews:
            from psf.preview import save_psf_grid

            save_psf_grid(field, stage / "psf_grid.png", title=f"captured PSFs, {field.grid_shape[0]}x"
                                                               f"{field.grid_shape[1]} nodes")
        path = save_psf_field(field, stage / "psfs.h5")
    print(f"{Path(args.save_dir) / path.name}: {list(field.psfs.shape)} ({field.channel_order}) from "
          f"{field.n_nodes} captures; node position fit residual {field.attrs['position_rms_px']:.3f} px")
    if field.attrs["edge_energy_max"] > 0.01:
        print(f"warning: up to {100 * field.attrs['edge_energy_max']:.1f}% of a PSF lies on the window border; "
              "consider a larger --psf_size", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main)
