"""Low-rank PSF bases (step 2):
``psfs[c_out, c_in, n] ~= sum_K basis_coef[c_out, c_in, K, n] * basis_psfs[c_out, c_in, K]``.

Per channel pair, the node PSFs are the rows of X [N, k*k]. Two decompositions (float64,
``torch.linalg.svd``; Eckart & Young 1936 for the optimality of the truncated SVD):

* ``pca`` (default): element 0 is the mean PSF with coefficient 1 at every node; elements
  1..K-1 are the leading right singular vectors of the centred X. Every node PSF sums to 1, so
  the centred rows sum to 0 and so does every principal component: a truncated reconstruction
  still sums to 1 at every node and, with bilinear coefficients, at every pixel, like the exact
  PSFs: a rendered image keeps its total flux for any K.
* ``svd``: the leading right singular vectors of the uncentred X (smallest squared error for a
  given K, without that guarantee).

Both reproduce the node PSFs to float error at K = N. The explained energy of K elements is
``E(K) = 1 - ||X - X_K||^2 / ||X||^2`` (fraction of the PSF stack's squared norm reproduced;
the relative RMS reconstruction error is ``sqrt(1 - E)``); it is non-decreasing in K. K is shared
by all channels; ``energy=E`` picks the smallest K meeting E in every channel.

``add_basis`` rewrites a PSF file with its basis (``basis_psfs``, ``basis_coef`` and the
attributes ``basis_method``, ``n_basis``, ``explained_energy``), atomically, with figures;
``data_gen/2.generate_basis_psfs.py`` is its command line.

Depth-aware files (``psfs [C_out, C_in, D, N, k, k]``, ``depths_m``): one basis **per depth plane**,
with one K for all planes (``basis_psfs [C_out, C_in, D, K, k, k]``, ``basis_coef [C_out, C_in,
D, K, N]``, ``explained_energy`` [D][C_out * C_in]). Each plane is decomposed exactly as a
single-plane file (K <= N; K = N reproduces every plane), so ``DepthPSFField.plane(i)`` is a
regular field with its own basis and the layered renderer's per-plane renders use it as is;
``energy=E`` picks the smallest K meeting E in every channel of every plane.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from psf.field import PSFField, load_psf_field, resolve_psf_path, save_psf_field
from psf.output import staged_output
from utils.errors import ConfigError

BASIS_METHODS = ("pca", "svd")


@dataclass
class PSFBasis:
    basis_psfs: torch.Tensor  # [C_out, C_in, K, k, k] float64
    basis_coef: torch.Tensor  # [C_out, C_in, K, N] float64
    energy_curve: torch.Tensor  # [C_out, C_in, N]: E(K) for K = 1..N
    method: str

    @property
    def n_basis(self) -> int:
        return self.basis_psfs.shape[2]

    @property
    def explained_energy(self) -> torch.Tensor:
        """[C_out, C_in] E(K) at the chosen K."""
        return self.energy_curve[..., self.n_basis - 1]


def _decompose(x: torch.Tensor, method: str):
    """x [C_out, C_in, N, P] -> (mean or None, U*S [.., N, r], Vh [.., r, P], S [.., r])."""
    if method == "pca":
        mean = x.mean(dim=-2, keepdim=True)
        u, s, vh = torch.linalg.svd(x - mean, full_matrices=False)
    else:
        mean = None
        u, s, vh = torch.linalg.svd(x, full_matrices=False)
    # Deterministic signs: the largest-magnitude entry of each basis vector is positive.
    idx = vh.abs().argmax(dim=-1, keepdim=True)
    sign = torch.sign(torch.gather(vh, -1, idx))
    sign[sign == 0] = 1.0
    vh = vh * sign
    u = u * sign.transpose(-1, -2)
    return mean, u * s[..., None, :], vh, s


def energy_curve(psfs: torch.Tensor, method: str = "pca") -> torch.Tensor:
    """[C_out, C_in, N] explained energy E(K) for K = 1..N (see module docstring)."""
    check_method(method)
    c_out, c_in, n = psfs.shape[:3]
    x = psfs.reshape(c_out, c_in, n, -1).double()
    total = x.square().sum(dim=(-2, -1))
    _, _, _, s = _decompose(x, method)
    sq = torch.zeros(c_out, c_in, n, dtype=torch.float64)
    r = min(n, s.shape[-1])
    sq[..., :r] = s[..., :r].square()
    tail = sq.flip(-1).cumsum(-1).flip(-1)  # tail[i] = sum_{j >= i} s_j^2
    residual = torch.zeros(c_out, c_in, n, dtype=torch.float64)
    if method == "svd":
        residual[..., :-1] = tail[..., 1:]  # K elements leave s_K, s_K+1, ...
    else:
        residual = tail  # the mean + K - 1 components leave s_{K-1}, ...
    safe_total = torch.where(total > 0, total, torch.ones_like(total))
    return (1.0 - residual / safe_total[..., None]).clamp(0.0, 1.0)


def choose_n_basis(curve: torch.Tensor, energy: float) -> int:
    """Smallest K whose explained energy reaches ``energy`` in every channel."""
    if not 0.0 < energy <= 1.0:
        raise ConfigError(f"energy must be in (0, 1], got {energy}")
    ok = (curve >= energy - 1e-12).reshape(-1, curve.shape[-1]).all(dim=0)
    return int(torch.nonzero(ok)[0]) + 1 if ok.any() else curve.shape[-1]


def check_method(method: str) -> None:
    if method not in BASIS_METHODS:
        from utils.registry import unknown_name_message

        raise ConfigError(unknown_name_message("basis method", method, BASIS_METHODS))


def psf_basis(psfs: torch.Tensor, n_basis: int | None = None, energy: float | None = None,
              method: str = "pca") -> PSFBasis:
    """Decompose ``psfs [C_out, C_in, N, k, k]``; give ``n_basis`` or ``energy`` (not both)."""
    check_method(method)
    if psfs.ndim != 5:
        raise ConfigError(f"psfs must be [C_out, C_in, N, k, k], got shape {list(psfs.shape)}")
    c_out, c_in, n, k, _ = psfs.shape
    if (n_basis is None) == (energy is None):
        raise ConfigError("give exactly one of n_basis (K) or energy (target explained energy)")
    curve = energy_curve(psfs, method)
    if energy is not None:
        n_basis = choose_n_basis(curve, float(energy))
    n_basis = int(n_basis)
    if n_basis < 1:
        raise ConfigError(f"n_basis must be >= 1, got {n_basis}")
    if n_basis > n:
        raise ConfigError(f"n_basis K={n_basis} is larger than the number of node PSFs N={n}")
    x = psfs.reshape(c_out, c_in, n, k * k).double()
    mean, us, vh, _ = _decompose(x, method)
    basis = torch.zeros(c_out, c_in, n_basis, k * k, dtype=torch.float64)
    coef = torch.zeros(c_out, c_in, n_basis, n, dtype=torch.float64)
    first = 0
    if mean is not None:
        basis[:, :, 0] = mean[:, :, 0]
        coef[:, :, 0] = 1.0
        first = 1
    take = min(n_basis - first, vh.shape[-2])  # beyond the rank: zero elements (exact anyway)
    basis[:, :, first:first + take] = vh[..., :take, :]
    coef[:, :, first:first + take] = us[..., :take].transpose(-1, -2)
    return PSFBasis(basis.reshape(c_out, c_in, n_basis, k, k), coef, curve, method)


def reconstruct(basis_psfs: torch.Tensor, basis_coef: torch.Tensor) -> torch.Tensor:
    """Node PSFs from a basis: [C_out, C_in, N, k, k] = sum_K coef[..., K, n] * basis[..., K]."""
    return torch.einsum("abkn,abkij->abnij", basis_coef, basis_psfs)


# -- step 2: the basis into the PSF file ------------------------------------------------------
FIGURES = ("psf_grid.png", "basis_psfs.png", "basis_coef.png", "explained_energy.png")


def field_with_basis(field: PSFField, n_basis: int | None = None, energy: float | None = None,
                     method: str = "pca") -> tuple[PSFField, torch.Tensor]:
    """The field carrying its basis (float32) and the explained-energy curve [C_out, C_in, N]."""
    basis = psf_basis(field.psfs, n_basis=n_basis, energy=energy, method=method)
    new = field.with_basis(basis.basis_psfs.float(), basis.basis_coef.float(), basis_method=method,
                           explained_energy=[float(v) for v in basis.explained_energy.reshape(-1)])
    return new, basis.energy_curve


def depth_field_with_basis(stack, n_basis: int | None = None, energy: float | None = None, method: str = "pca"):
    """A ``DepthPSFField`` carrying one basis per plane (shared K; see module docstring) and the
    explained-energy curves [D, C_out, C_in, N]."""
    from psf.depth import DepthPSFField

    check_method(method)
    if (n_basis is None) == (energy is None):
        raise ConfigError("give exactly one of n_basis (K) or energy (target explained energy)")
    curves = torch.stack([energy_curve(stack.psfs[:, :, d], method) for d in range(stack.n_depths)])
    if energy is not None:
        n_basis = choose_n_basis(curves, float(energy))  # every channel of every plane
    planes = [field_with_basis(stack.plane(d), n_basis=n_basis, method=method)[0] for d in range(stack.n_depths)]
    new = DepthPSFField.from_planes(planes, stack.depths_m)
    new.attrs = {**stack.attrs, "basis_method": method, "explained_energy": new.attrs["explained_energy"]}
    new.validate()
    return new, curves


def _is_depth_file(path: Path) -> bool:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return "depths_m" in f
    except OSError:
        return False  # load_psf_field reports it


def add_depth_basis(path: Path, n_basis=None, energy=None, method="pca", figures=True, progress=False):
    """``add_basis`` for a depth-aware file: per-plane figures ``<name>_d<i>.png``."""
    from tqdm import tqdm

    from psf.depth import load_depth_psf_field, save_depth_psf_field

    stack = load_depth_psf_field(path)
    new, curves = depth_field_with_basis(stack, n_basis=n_basis, energy=energy, method=method)
    with tqdm(total=2, desc="basis figures + file", unit="step", disable=not progress) as bar:
        with staged_output(path.parent) as stage:
            if figures:
                from psf.preview import save_basis_psfs, save_coef_maps, save_energy_curve, save_psf_grid

                for d in range(new.n_depths):
                    plane = new.plane(d)
                    names = [f"{Path(n).stem}_d{d}.png" for n in FIGURES]
                    save_psf_grid(plane, stage / names[0])
                    save_basis_psfs(plane.basis_psfs, stage / names[1], plane.channel_order)
                    save_coef_maps(plane, stage / names[2])
                    save_energy_curve(curves[d], new.n_basis, stage / names[3], plane.channel_order)
            bar.update()
            save_depth_psf_field(new, stage / path.name)
            bar.update()
    return new, curves, path


def add_basis(path: str | os.PathLike, n_basis: int | None = None, energy: float | None = None,
              method: str = "pca", figures: bool = True, progress: bool = False) -> tuple[PSFField, torch.Tensor, Path]:
    """Rewrite ``path`` (a psfs.h5 or its folder) with ``basis_psfs``/``basis_coef``; figures
    are written next to it. Everything is staged and moved into place only when complete.
    A depth-aware file gets one basis per plane (``add_depth_basis``; returns a ``DepthPSFField``
    and curves [D, C_out, C_in, N])."""
    from tqdm import tqdm

    path = resolve_psf_path(path)
    if _is_depth_file(path):
        return add_depth_basis(path, n_basis=n_basis, energy=energy, method=method, figures=figures, progress=progress)
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
