#!/usr/bin/env python
"""MTF of a PSF file: tangential/sagittal per channel and field position, MTF50 and cutoff, and a figure.

    python scripts/mtf.py --psf_data_path DIR_OR_H5 [--out DIR] [--divide_pixel] [--nodes diagonal|all]
        [--depth_m M | --depth_index I] [--f_number N] [--threshold 0.01] [--n_freqs 129]

Writes OUT/mtf.png (per channel: MTF curves of the chosen nodes, tangential solid, sagittal dashed,
coloured by field height, the diffraction limit in black; below, MTF50 against field height) and
OUT/mtf.json (MTF50 and cutoff of every channel and node, in cycles/pixel and cycles/mm; the
diffraction cutoff 1 / (lambda N)). OUT defaults to the PSF file's folder. Frequencies run to the
sampling's Nyquist frequency (0.5 cycles/pixel). The MTF includes the pixel aperture
(sinc) unless --divide_pixel; the diffraction limit is drawn to match. The diffraction limit needs
the file's f-number (seidel/zernike files) or --f_number. Method and conventions: psf/mtf.py.

Example:
    python data_gen/1.generate_psfs_synthetic.py --psf_type seidel --save_dir psfs/seidel --grid 5 5 \\
        --f_number 4 --pixel_pitch_um 2 --seidel W040=1.5 W020=-1.5 W131=1.5 W222=1.5 W220=1
    python scripts/mtf.py --psf_data_path psfs/seidel
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from psf.output import OneLineParser  # noqa: E402
from utils.errors import ConfigError, run_cli  # noqa: E402


def parse_args(argv=None):
    doc = __doc__.split("\n\n", 1)
    p = OneLineParser(description=doc[0], epilog=doc[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--psf_data_path", required=True, help="folder holding psfs.h5, or the .h5 file")
    p.add_argument("--out", help="output folder (default: the PSF file's folder)")
    p.add_argument("--divide_pixel", action="store_true", help="divide the pixel aperture sinc out (optics only)")
    p.add_argument("--nodes", default="diagonal", choices=("diagonal", "all"),
                   help="curves drawn: nodes on the half-diagonal from the centre to a corner (default) or all")
    p.add_argument("--depth_m", type=float, help="depth-aware file: object distance (interpolated in 1/distance)")
    p.add_argument("--depth_index", type=int, help="depth-aware file: stored plane index")
    p.add_argument("--f_number", type=float, help="f-number of the diffraction limit (default: from the file)")
    p.add_argument("--threshold", type=float, default=0.01, help="MTF level defining the cutoff (default 0.01)")
    p.add_argument("--n_freqs", type=int, default=129, help="frequency samples from 0 to 0.5 cycles/pixel (default 129)")
    return p.parse_args(argv)


def diagonal_nodes(field) -> list[int]:
    """Nodes from the centre towards the bottom-right corner (the grid's main half-diagonal), else all."""
    gh, gw = field.grid_shape
    steps = min(gh, gw)
    rows = np.linspace((gh - 1) / 2, gh - 1, (steps + 1) // 2).round().astype(int)
    cols = np.linspace((gw - 1) / 2, gw - 1, (steps + 1) // 2).round().astype(int)
    nodes = sorted({int(r * gw + c) for r, c in zip(rows, cols)})
    return nodes or list(range(gh * gw))


def main(argv=None) -> int:
    args = parse_args(argv)
    from psf.depth import load_depth_psf_field
    from psf.field import resolve_psf_path
    from psf.mtf import field_mtf, save_mtf_figure

    if args.n_freqs < 3:
        raise ConfigError(f"--n_freqs must be >= 3, got {args.n_freqs}")
    path = resolve_psf_path(args.psf_data_path)
    stack = load_depth_psf_field(path)
    title = path.parent.name + "/" + path.name
    if stack.n_depths > 1 or args.depth_m is not None or args.depth_index is not None:
        if args.depth_m is not None and args.depth_index is not None:
            raise ConfigError("give --depth_m or --depth_index, not both")
        if args.depth_index is not None:
            if not 0 <= args.depth_index < stack.n_depths:
                raise ConfigError(f"--depth_index {args.depth_index} out of range (the file has {stack.n_depths} planes)")
            field = stack.plane(args.depth_index)
        elif args.depth_m is not None:
            field = stack.at_depth(args.depth_m)
        else:
            raise ConfigError(f"{path} holds {stack.n_depths} depths {stack.depths_m.tolist()} m: "
                              "choose one with --depth_m or --depth_index")
        title += f", object at {field.attrs['object_distance_m']:g} m"
    else:
        field = stack.plane(0)
    result = field_mtf(field, n_freqs=args.n_freqs, divide_pixel=args.divide_pixel, threshold=args.threshold,
                       f_number=args.f_number)
    out = Path(args.out) if args.out else path.parent
    out.mkdir(parents=True, exist_ok=True)
    nodes = diagonal_nodes(field) if args.nodes == "diagonal" else None
    save_mtf_figure(result, out / "mtf.png", nodes=nodes, title=title)
    from utils.atomic import atomic_write_text

    summary = {"psf_file": str(path), **result.summary()}
    atomic_write_text(out / "mtf.json", json.dumps(summary, indent=1))
    m50 = result.mtf50()
    for c, name in enumerate(field.channel_order):
        t, s = m50["tangential"][c], m50["sagittal"][c]
        print(f"{name}: MTF50 tangential {np.nanmin(t):.4f}-{np.nanmax(t):.4f}, sagittal {np.nanmin(s):.4f}-"
              f"{np.nanmax(s):.4f} cycles/pixel over {len(t)} nodes")
    if "diffraction_cutoff_cyc_per_mm" in summary:
        cut = ", ".join(f"{v:.0f}" for v in summary["diffraction_cutoff_cyc_per_mm"])
        print(f"diffraction cutoff 1/(lambda N): {cut} cycles/mm (Nyquist {500 / result.pixel_pitch_um:.0f} cycles/mm)")
    print(f"wrote {out / 'mtf.png'} and {out / 'mtf.json'}")
    return 0


if __name__ == "__main__":
    run_cli(main)
