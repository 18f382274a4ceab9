#!/usr/bin/env python
"""Fit a PSF field network (psf/psf_net.py) to PSF files and save it.

    python scripts/fit_psf_net.py --psf_data_path psfs/seidel --out nets/seidel [--model field|embedding]
        [--decoder mlp|deconv] [--steps 2000] [--time_limit_s 180] [--export_grid GH GW]

A depth-aware PSF file (``psfs [C, 1, D, N, k, k]`` + ``depths_m``, psf/depth.py), or several
files with ``--depths_mm`` (one per file), fit a depth-dependent network (inputs x, y, depth). Writes OUT/config.json + OUT/model.safetensors (load with
``psf.psf_net.PSFFieldNet.load(OUT)``), OUT/fit.json (steps, seconds, relative L2, history) and,
with ``--export_grid``, OUT/psfs.h5: the network sampled on that grid, a PSF file the renderer
and step 3 read (a depth network: one plane at ``--export_depth_mm``, else a depth stack at the
training depths).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from utils.errors import ConfigError, run_cli  # noqa: E402


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise ConfigError(f"{message} (see --help)")


def parse_args(argv=None):
    doc = __doc__.split("\n\n", 1)
    p = _Parser(description=doc[0], epilog=doc[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--psf_data_path", nargs="+", required=True, help="PSF file(s) or folder(s) holding psfs.h5")
    p.add_argument("--depths_mm", nargs="+", type=float, help="object depth of each PSF file (depth network)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--model", choices=("field", "embedding"), default="field",
                   help="field: (x, y[, depth]) -> PSF; embedding: PSF encoder/decoder + coordinates -> latent")
    p.add_argument("--decoder", choices=("mlp", "deconv"), default="mlp", help="PSF decoder (default mlp)")
    p.add_argument("--hidden", type=int, default=256, help="MLP width (default 256)")
    p.add_argument("--layers", type=int, default=4, help="MLP depth (default 4)")
    p.add_argument("--n_freqs", type=int, default=0, help="Fourier-feature octaves of the coordinates (default 0)")
    p.add_argument("--latent_dim", type=int, default=16, help="embedding: latent size (default 16)")
    p.add_argument("--steps", type=int, default=2000, help="optimiser steps (full batch; default 2000)")
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (default 2e-3)")
    p.add_argument("--time_limit_s", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--target_l2", type=float, default=None, help="stop once the relative L2 is below this")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--export_grid", nargs=2, type=int, metavar=("GH", "GW"), help="also write OUT/psfs.h5 on this grid")
    p.add_argument("--export_depth_mm", type=float, help="depth of the exported field (depth networks)")
    args = p.parse_args(argv)
    if args.depths_mm is not None and len(args.depths_mm) != len(args.psf_data_path):
        p.error(f"--depths_mm needs one depth per --psf_data_path ({len(args.psf_data_path)})")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from psf.depth import save_depth_psf_field
    from psf.field import save_psf_field
    from psf.psf_net import (PSFEmbeddingNet, PSFFieldNet, PSFNetConfig, field_training_data, fit, grid_triples,
                             load_training_fields)

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    entries = load_training_fields(args.psf_data_path)
    fields = [f for f, _ in entries]
    stored = [d for _, d in entries]
    if args.depths_mm is not None:
        if any(d is not None for d in stored):
            raise ConfigError("--depths_mm is for plain PSF files; a depth-aware file carries its depths")
        depths = list(args.depths_mm)
    elif all(d is not None for d in stored):
        depths = stored
    elif any(d is not None for d in stored):
        raise ConfigError("mixing depth-aware and plain PSF files: give every file a depth (--depths_mm)")
    else:
        depths = None
    if depths is not None and len(set(depths)) == 1:
        depths = None  # one depth: a 2-D field
    xy, depth, psfs = field_training_data(fields, depths)
    depth_range = None if depths is None else (min(depths), max(depths))
    cfg = PSFNetConfig(psf_size=psfs.shape[-1], channels=psfs.shape[1], sensor_res=fields[0].sensor_res,
                       depth_range_mm=depth_range, decoder=args.decoder, hidden=args.hidden, layers=args.layers,
                       n_freqs=args.n_freqs, latent_dim=args.latent_dim)
    net = (PSFEmbeddingNet if args.model == "embedding" else PSFFieldNet)(cfg).to(args.device)
    coords = net.coords(xy.numpy(), None if depth is None else depth.numpy())
    triples = grid_triples(fields[0].grid_shape, len(fields)) if args.model == "embedding" else None
    result = fit(net, coords, psfs, steps=args.steps, lr=args.lr, time_limit_s=args.time_limit_s,
                 target_l2=args.target_l2, triples=triples, seed=args.seed,
                 log=lambda step, err: print(f"step {step}: relative L2 {err:.4f}", flush=True))
    out = Path(args.out)
    net.cpu().save(out)
    (out / "fit.json").write_text(json.dumps({"steps": result.steps, "seconds": result.seconds,
                                              "relative_l2": result.relative_l2, "history": result.history,
                                              "args": vars(args)}, indent=2))
    print(f"{out}: {args.model} network, {result.steps} steps in {result.seconds:.1f} s, "
          f"relative L2 {result.relative_l2:.4f} on {len(psfs)} PSFs")
    if args.export_grid:
        if depth_range is not None and args.export_depth_mm is None:
            stack = net.to_depth_field(args.export_grid, sorted({d / 1000.0 for d in depths}))
            save_depth_psf_field(stack, out / "psfs.h5")
        else:
            save_psf_field(net.to_field(args.export_grid, depth_mm=args.export_depth_mm), out / "psfs.h5")
        print(f"{out / 'psfs.h5'}: the network sampled on a {args.export_grid[0]}x{args.export_grid[1]} grid")
    return 0


if __name__ == "__main__":
    run_cli(main)
