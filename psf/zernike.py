"""Zernike polynomials (Noll indexing, RMS-normalised) and the ``zernike`` PSF type.

Noll, "Zernike polynomials and atmospheric turbulence", JOSA 66 (1976), eq. (2)-(4):
``Z_j = sqrt(n + 1) R_n^m(rho) sqrt(2) cos(m theta)`` (j even, m != 0),
``sqrt(n + 1) R_n^m(rho) sqrt(2) sin(m theta)`` (j odd, m != 0), ``sqrt(n + 1) R_n^0(rho)`` (m = 0),
with ``R_n^m(rho) = sum_s (-1)^s (n - s)! / (s! ((n + m)/2 - s)! ((n - m)/2 - s)!) rho^(n - 2s)``.
Each mode has unit RMS over the unit disk, so a coefficient is the RMS wavefront error of its
mode (in waves) and the total RMS is the root sum of squares of the coefficients (piston excluded).
Pupil angle theta = atan2(rho_y, rho_x) in sensor axes (x right, y down).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from psf.depth import ThinLens
from psf.optics import incoherent_psfs
from psf.seidel import lens_attrs
from psf.field import MAX_ATTR_VALUES
from utils.errors import ConfigError, DataError


def noll_to_nm(j: int) -> tuple[int, int]:
    """Noll index j >= 1 -> (n, m), m signed: m > 0 cosine (j even), m < 0 sine (j odd)."""
    if j < 1:
        raise ValueError(f"Noll indices start at 1, got {j}")
    n = 0
    j1 = j - 1
    while j1 > n:
        n += 1
        j1 -= n
    m_abs = (n % 2) + 2 * ((j1 + ((n + 1) % 2)) // 2)
    m = m_abs if (m_abs == 0 or j % 2 == 0) else -m_abs
    return n, m


def zernike_radial(n: int, m: int, rho: torch.Tensor) -> torch.Tensor:
    m = abs(m)
    out = torch.zeros_like(rho)
    for s in range((n - m) // 2 + 1):
        c = (-1) ** s * math.factorial(n - s) / (
            math.factorial(s) * math.factorial((n + m) // 2 - s) * math.factorial((n - m) // 2 - s))
        out = out + c * rho ** (n - 2 * s)
    return out


def zernike(j: int, rho_x: torch.Tensor, rho_y: torch.Tensor) -> torch.Tensor:
    """Noll's Z_j at pupil points (not masked outside the unit disk)."""
    n, m = noll_to_nm(j)
    rho = torch.hypot(rho_x, rho_y)
    theta = torch.atan2(rho_y, rho_x)
    radial = zernike_radial(n, m, rho)
    if m == 0:
        return math.sqrt(n + 1) * radial
    angular = torch.cos(m * theta) if m > 0 else torch.sin(-m * theta)
    return math.sqrt(2 * (n + 1)) * radial * angular


def zernike_basis(n_modes: int, rho_x: torch.Tensor, rho_y: torch.Tensor) -> torch.Tensor:
    """[n_modes, *rho.shape]: Z_1 ... Z_{n_modes}."""
    return torch.stack([zernike(j, rho_x, rho_y) for j in range(1, n_modes + 1)])


def _load_coefficient_map(value, n_nodes: int, grid_shape) -> np.ndarray:
    if isinstance(value, (str, Path)):
        path = Path(value)
        if not path.is_file():
            raise DataError(f"Zernike coefficient file not found: {path}")
        try:
            value = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise DataError(f"cannot read Zernike coefficients from {path} (expected a .npy array): {exc}") from None
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 3 and tuple(arr.shape[:2]) == tuple(grid_shape):
        arr = arr.reshape(n_nodes, -1)
    if arr.ndim == 1:
        arr = np.broadcast_to(arr, (n_nodes, arr.shape[0]))
    if arr.ndim != 2 or arr.shape[0] != n_nodes:
        raise ConfigError(f"Zernike coefficient map must be [J], [N={n_nodes}, J] or "
                          f"[{grid_shape[0]}, {grid_shape[1]}, J] (Noll j = 1..J), got shape {list(arr.shape)}")
    if not np.isfinite(arr).all():
        raise ConfigError("Zernike coefficient map contains NaN or inf")
    return np.ascontiguousarray(arr)


@dataclass
class ZernikePSF(ThinLens):
    """Options of the ``zernike`` type (coefficients in waves RMS at ``reference_wavelength_nm``).

    coefficients: {noll_j: waves} applied at every node, or
    coefficient_map: per-node coefficients [N, J] / [G_h, G_w, J] (Noll j = 1..J) or a .npy path;
    otherwise random, smoothly varying: each mode j in [min_noll, max_noll] is a random polynomial of
    degree ``field_order`` in the normalised sensor coordinates, weighted 1 / n_j (radial order),
    scaled so the field-average total RMS wavefront error is ``rms_waves`` (seeded).
    focal_length_mm, focus_distance_m, object_distance_m (...): thin-lens depth (``ThinLens``,
    psf/depth.py): its defocus W020 rho² (= Noll a4 = W020 / (2 sqrt 3) plus piston) is added.
    """

    f_number: float = 2.8
    coefficients: dict[int, float] | None = None
    coefficient_map: Any = None
    rms_waves: float = 0.15
    min_noll: int = 4
    max_noll: int = 15
    field_order: int = 2
    reference_wavelength_nm: float = 550.0
    min_pupil_samples: int = 96

    def __post_init__(self):
        if not float(self.f_number) > 0:
            raise ConfigError(f"f_number must be > 0, got {self.f_number}")
        if self.coefficients is not None and self.coefficient_map is not None:
            raise ConfigError("give either zernike coefficients (same at every node) or a coefficient_map, not both")
        if self.coefficients is not None:
            try:
                self.coefficients = {int(j): float(v) for j, v in dict(self.coefficients).items()}
            except (TypeError, ValueError):
                raise ConfigError(f"zernike coefficients must map Noll index -> waves, got {self.coefficients!r}") from None
            if any(j < 1 for j in self.coefficients):
                raise ConfigError(f"Noll indices start at 1, got {sorted(self.coefficients)}")
        if not 1 <= int(self.min_noll) <= int(self.max_noll):
            raise ConfigError(f"need 1 <= min_noll <= max_noll, got {self.min_noll}, {self.max_noll}")
        if not float(self.rms_waves) >= 0:
            raise ConfigError(f"rms_waves must be >= 0, got {self.rms_waves}")
        if self.abbe_number is not None:
            raise ConfigError("abbe_number (axial colour) is a seidel option; zernike takes per-node coefficients")
        self.check_lens()

    def node_coefficients(self, ctx) -> np.ndarray:
        """[N, J] Noll coefficients (j = 1..J) of every node, in waves at the reference wavelength."""
        n = ctx.n_nodes
        if self.coefficient_map is not None:
            return _load_coefficient_map(self.coefficient_map, n, ctx.geometry.grid_shape)
        if self.coefficients is not None:
            coefs = np.zeros((n, max(self.coefficients, default=1)))
            for j, v in self.coefficients.items():
                coefs[:, j - 1] = v
            return coefs
        geom = ctx.geometry
        xy = geom.offsets() / geom.corner_radius  # [N, 2] in [-1, 1]
        powers = [(a, b) for a in range(self.field_order + 1) for b in range(self.field_order + 1 - a)]
        monomials = np.stack([xy[:, 0] ** a * xy[:, 1] ** b for a, b in powers], axis=1)  # [N, P]
        modes = list(range(int(self.min_noll), int(self.max_noll) + 1))
        draws = torch.randn(len(modes), len(powers), generator=ctx.generator, dtype=torch.float64).numpy()
        weights = np.array([1.0 / max(noll_to_nm(j)[0], 1) for j in modes])
        coefs = np.zeros((n, int(self.max_noll)))
        coefs[:, np.array(modes) - 1] = monomials @ (draws * weights[:, None]).T
        total = math.sqrt(float(np.mean(np.sum(coefs ** 2, axis=1))))
        if total > 0:
            coefs *= float(self.rms_waves) / total
        return coefs

    def simulate(self, ctx):
        coefs = self.node_coefficients(ctx)
        coefs_t = torch.from_numpy(coefs)
        n_w = self.diffraction_f_number(self.f_number)
        stack = []
        for depth in self.object_depths() or [None]:
            out = []
            for lam in ctx.wavelengths_nm:
                scale = self.reference_wavelength_nm / lam
                w020 = 0.0 if depth is None else self.lens_w020_waves(self.f_number, depth, lam,
                                                                      self.reference_wavelength_nm)

                def wavefront(rx, ry, scale=scale, w020=w020):
                    basis = zernike_basis(coefs_t.shape[1], rx, ry)  # [J, ...]
                    w = scale * torch.einsum("nj,j...->n...", coefs_t.to(rx), basis)
                    return w + w020 * (rx ** 2 + ry ** 2)[None] if w020 else w

                psfs, _ = incoherent_psfs(wavefront, lam, n_w, ctx.pixel_pitch_um, ctx.psf_size,
                                          min_pupil_samples=self.min_pupil_samples, device=ctx.device,
                                          progress=ctx.progress)
                out.append(psfs)
            stack.append(torch.stack(out))
        attrs = {"f_number": float(self.f_number), **lens_attrs(self)}
        if coefs.size <= MAX_ATTR_VALUES:  # HDF5 attributes are limited to 64 KiB
            attrs["zernike_coefficients"] = coefs.astype(np.float32)
        return (torch.stack(stack, dim=1) if self.is_stack else stack[0]), attrs
