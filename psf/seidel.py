"""``seidel`` PSFs: diffraction through a circular pupil with third-order (Seidel) aberrations.

Wavefront (Wyant & Creath, "Basic wavefront aberration theory for optical metrology", Applied
Optics and Optical Engineering XI, 1992, section on the Seidel aberrations), coefficients in waves at the pupil edge (rho = 1) and full field (h = 1, the
sensor corner), theta measured from the direction of the field point:

    W(rho, theta; h) = W020 rho^2 + W040 rho^4 + W131 h rho^3 cos(theta)
                     + W222 h^2 rho^2 cos^2(theta) + W220 h^2 rho^2 + W311 h^3 rho cos(theta)

(defocus, spherical, coma, astigmatism, field curvature, distortion). The coefficients are in
waves at ``reference_wavelength_nm``: they describe one optical path difference, so channel c sees
``W * lambda_ref / lambda_c`` waves. The PSF is computed by psf/optics.py (Fraunhofer, Nyquist-
sampled, exact pixel integration). Sign convention: positive W311 moves image points away from
the axis by ``2 N lambda W311 h^3`` (pincushion), negative towards it (barrel); coma of either
sign is mirror-symmetric about the radial direction.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from psf.optics import incoherent_psfs
from utils.errors import ConfigError

SEIDEL_TERMS = ("W020", "W040", "W131", "W222", "W220", "W311")


def seidel_wavefront(coefficients: dict[str, float], h: torch.Tensor, direction: torch.Tensor,
                     rho_x: torch.Tensor, rho_y: torch.Tensor) -> torch.Tensor:
    """W in waves [N, *rho.shape] for nodes at field heights h [N] and directions [N, 2]."""
    c = {name: float(coefficients.get(name, 0.0)) for name in SEIDEL_TERMS}
    h = h.reshape(-1, *([1] * rho_x.ndim)).to(rho_x)
    cos_t = direction[:, 0].reshape(h.shape).to(rho_x)
    sin_t = direction[:, 1].reshape(h.shape).to(rho_x)
    rho2 = (rho_x ** 2 + rho_y ** 2)[None]
    rho_par = rho_x[None] * cos_t + rho_y[None] * sin_t  # rho cos(theta), theta from the field direction
    return (c["W020"] * rho2 + c["W040"] * rho2 ** 2 + c["W131"] * h * rho2 * rho_par
            + c["W222"] * h ** 2 * rho_par ** 2 + c["W220"] * h ** 2 * rho2 + c["W311"] * h ** 3 * rho_par)


def check_seidel(coefficients: dict) -> dict[str, float]:
    from utils.registry import closest

    out = {}
    for name, value in dict(coefficients or {}).items():
        key = str(name).upper()
        if key not in SEIDEL_TERMS:
            guess = closest(key, SEIDEL_TERMS)
            hint = f"; did you mean '{guess}'?" if guess else ""
            raise ConfigError(f"unknown Seidel coefficient '{name}'{hint} (known: {', '.join(SEIDEL_TERMS)})")
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"Seidel coefficient {name} must be a number of waves, got {value!r}") from None
    return out


@dataclass
class SeidelPSF:
    """Options of the ``seidel`` type.

    f_number: image-space working f-number N (sets the Airy radius 1.22 lambda N).
    seidel: coefficients in waves, e.g. {"W040": 0.5, "W131": 0.3}; missing terms are 0.
    reference_wavelength_nm: wavelength at which the coefficients are given.
    min_pupil_samples: pupil sampling floor (accuracy; see psf/optics.py).
    """

    f_number: float = 2.8
    seidel: dict[str, float] = field(default_factory=dict)
    reference_wavelength_nm: float = 550.0
    min_pupil_samples: int = 96

    def __post_init__(self):
        self.seidel = check_seidel(self.seidel)
        if not float(self.f_number) > 0:
            raise ConfigError(f"f_number must be > 0, got {self.f_number}")
        if not float(self.reference_wavelength_nm) > 0:
            raise ConfigError(f"reference_wavelength_nm must be > 0, got {self.reference_wavelength_nm}")

    def wavefront_fn(self, ctx, wavelength_nm: float):
        geom = ctx.geometry
        h = torch.from_numpy(geom.field_height())
        direction = torch.from_numpy(geom.field_direction())
        scale = self.reference_wavelength_nm / wavelength_nm
        return lambda rx, ry: scale * seidel_wavefront(self.seidel, h, direction, rx, ry)

    def simulate(self, ctx):
        out, plans = [], []
        for lam in ctx.wavelengths_nm:
            psfs, plan = incoherent_psfs(self.wavefront_fn(ctx, lam), lam, self.f_number, ctx.pixel_pitch_um,
                                         ctx.psf_size, min_pupil_samples=self.min_pupil_samples,
                                         device=ctx.device, progress=ctx.progress)
            out.append(psfs)
            plans.append(plan)
        return torch.stack(out), {"f_number": float(self.f_number), "sampling_q": [p.q for p in plans]}
