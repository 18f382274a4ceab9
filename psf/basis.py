"""Step 2: add a low-rank basis (utils/pca.py) to a PSF file, atomically, with figures."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from psf.field import PSFField, load_psf_field, resolve_psf_path, save_psf_field
from psf.output import staged_output
from utils.pca import psf_basis

FIGURES = ("psf_grid.png", "basis_psfs.png", "basis_coef.png", "explained_energy.png")


def field_with_basis(field: PSFField, n_basis: int | None = None, energy: float | None = None,
                     method: str = "pca") -> tuple[PSFField, torch.Tensor]:
    """The field carrying its basis (float32) and the explained-energy curve [C_out, C_in, N]."""
    basis = psf_basis(field.psfs, n_basis=n_basis, energy=energy, method=method)
    new = field.with_basis(basis.basis_psfs.float(), basis.basis_coef.float(), basis_method=method,
                           explained_energy=[float(v) for v in basis.explained_energy.reshape(-1)])
    return new, basis.energy_curve


def add_basis(path: str | os.PathLike, n_basis: int | None = None, energy: float | None = None,
              method: str = "pca", figures: bool = True, progress: bool = False) -> tuple[PSFField, torch.Tensor, Path]:
    """Rewrite ``path`` (a psfs.h5 or its folder) with ``basis_psfs``/``basis_coef``; figures
    are written next to it. Everything is staged and moved into place only when complete."""
    from tqdm import tqdm

    path = resolve_psf_path(path)
    field = load_psf_field(path)
    new, curve = field_with_basis(field, n_basis=n_basis, energy=energy, method=method)
    with tqdm(total=2, desc="basis figures + file", unit="step", disable=not progress) as bar:
        with staged_output(path.parent) as stage:
            if figures:
                from psf.preview import save_basis_psfs, save_coef_maps, save_energy_curve, save_psf_grid

                save_psf_grid(new, stage / FIGURES[0])
                save_basis_psfs(new.basis_psfs, stage / FIGURES[1], new.channel_order)
                save_coef_maps(new, stage / FIGURES[2])
                save_energy_curve(curve, new.n_basis, stage / FIGURES[3], new.channel_order)
            bar.update()
            save_psf_field(new, stage / path.name)
            bar.update()
    return new, curve, path
