#!/usr/bin/env python
"""Step 2: add a low-rank PSF basis (basis_psfs, basis_coef) to DIR/psfs.h5, atomically.

    python data_gen/2.generate_basis_psfs.py --psf_data_path DIR [--n_basis K | --energy E] [--method pca|svd]

Figures (psf_grid.png, basis_psfs.png, basis_coef.png, explained_energy.png) go next to the file.
A depth-aware file (psfs [C_out, C_in, D, N, k, k], depths_m) gets one basis per depth plane, K
shared by the planes (basis_psfs [C_out, C_in, D, K, k, k], basis_coef [C_out, C_in, D, K, N]) and
figures per plane (psf_grid_d0.png, ...). The math is in psf/basis.py; see docs/optics.md.
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
    energy = field.attrs["explained_energy"]
    if hasattr(field, "depths_m"):  # a depth stack: one basis per plane; report the worst plane per channel
        energy = [min(plane[i] for plane in energy) for i in range(len(energy[0]))]
        where = f", one basis per depth plane ({field.n_depths} planes), lowest explained energy over the planes"
        n_nodes = field.psfs.shape[3]
    else:
        where, n_nodes = ", explained energy", field.n_nodes
    energies = ", ".join(f"{ch}={e:.6f}" for ch, e in zip(field.channel_order, energy))
    print(f"{path}: K={field.n_basis} of N={n_nodes} basis PSFs ({args.method}){where} {energies}")
    return 0


if __name__ == "__main__":
    run_cli(main)
