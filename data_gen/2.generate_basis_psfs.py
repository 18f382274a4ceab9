#!/usr/bin/env python
"""Step 2: add a low-rank PSF basis (basis_psfs, basis_coef) to DIR/psfs.h5, atomically.

    python data_gen/2.generate_basis_psfs.py --psf_data_path DIR [--n_basis K | --energy E] [--method pca|svd]

Figures (psf_grid.png, basis_psfs.png, basis_coef.png, explained_energy.png) go next to the file.
The math is in psf/basis.py; see docs/optics.md.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from psf.output import OneLineParser  # noqa: E402
from utils.errors import run_cli  # noqa: E402
from psf.basis import BASIS_METHODS  # noqa: E402


def parse_args(argv=None):
    p = OneLineParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 2)[-1],
                      formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("--psf_data_path", required=True, help="folder holding psfs.h5 (or the .h5 file itself)")
    k = p.add_mutually_exclusive_group()
    k.add_argument("--n_basis", type=int, help="number of basis elements K (1 <= K <= N nodes), shared by all channels")
    k.add_argument("--energy", type=float,
                   help="pick the smallest K whose explained energy reaches E in every channel (default 0.999)")
    p.add_argument("--method", default="pca", choices=BASIS_METHODS,
                   help="pca: mean PSF + principal components (truncations conserve energy; default); "
                        "svd: uncentred SVD (least squared error)")
    p.add_argument("--no_figures", action="store_true", help="skip the PNG figures")
    return p.parse_args(argv)


def main() -> int:
    args = parse_args()
    from psf.basis import add_basis

    energy = 0.999 if args.energy is None and args.n_basis is None else args.energy
    field, _, path = add_basis(args.psf_data_path, n_basis=args.n_basis, energy=energy, method=args.method,
                               figures=not args.no_figures, progress=True)
    energies = ", ".join(f"{ch}={e:.6f}" for ch, e in zip(field.channel_order, field.attrs["explained_energy"]))
    print(f"{path}: K={field.n_basis} of N={field.n_nodes} basis PSFs ({args.method}), explained energy {energies}")
    return 0


if __name__ == "__main__":
    run_cli(main)
