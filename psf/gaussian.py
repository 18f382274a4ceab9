"""``gaussian`` PSFs: elliptical, radially oriented, field- and colour-dependent, pixel-integrated.

At normalised field height h the PSF of channel c is a 2-D normal distribution with standard
deviations ``sigma_radial(h)`` along the direction from the sensor centre to the node and
``sigma_tangential(h)`` across it,

    sigma(h) = scale_c * (sigma_px + (sigma_corner_px - sigma_px) * h ** field_exponent),

centred ``lateral_color_px[c] * h`` pixels outward from the node (lateral colour, linear in h as
the Seidel lateral-colour term). Each pixel holds the exact probability mass over its square,
``P(a1 < X < b1, a2 < Y < b2)`` of the correlated bivariate normal, from the bivariate normal
CDF written with Owen's T function (Owen 1956, Ann. Math. Stat. 27, eq. 2.1-2.3), so sigmas well
below a pixel are right (for axis-aligned ellipses it reduces to the product of erf differences).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import ndtr, owens_t

from utils.errors import ConfigError


def bivariate_normal_cdf(h: np.ndarray, k: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """P(X <= h, Y <= k) for standard normals with correlation ``rho`` (|rho| < 1), vectorised.

    Owen (1956): Phi2(h, k; rho) = (Phi(h) + Phi(k)) / 2 - T(h, a_h) - T(k, a_k) - beta with
    a_h = (k - rho h) / (h sqrt(1 - rho^2)), a_k = (h - rho k) / (k sqrt(1 - rho^2)),
    beta = 0 if h k > 0 or (h k = 0 and h + k >= 0), else 1/2.
    """
    h, k, rho = np.broadcast_arrays(np.asarray(h, np.float64), np.asarray(k, np.float64), np.asarray(rho, np.float64))
    tiny = 1e-300
    h = np.where(h == 0.0, tiny, h)  # the formula is continuous in h, k; avoid 0/0
    k = np.where(k == 0.0, tiny, k)
    root = np.sqrt(1.0 - rho * rho)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        a_h = (k - rho * h) / (h * root)
        a_k = (h - rho * k) / (k * root)
    beta = np.where((h > 0) == (k > 0), 0.0, 0.5)  # sign test: h * k may underflow
    out = 0.5 * (ndtr(h) + ndtr(k)) - owens_t(h, a_h) - owens_t(k, a_k) - beta
    # Infinite limits: Phi2(+inf, k) = Phi(k), Phi2(-inf, k) = 0.
    out = np.where(np.isposinf(h), ndtr(k), out)
    out = np.where(np.isposinf(k), ndtr(h), out)
    out = np.where(np.isneginf(h) | np.isneginf(k), 0.0, out)
    return np.clip(out, 0.0, 1.0)


def pixel_integrated_gaussian(mean: np.ndarray, cov: np.ndarray, psf_size: int) -> np.ndarray:
    """Mass of N(mean, cov) in every pixel of a ``k x k`` window centred on offset (0, 0).

    mean [..., 2] (dx, dy) and cov [..., 2, 2] in pixels (x right, y down); returns [..., k, k]
    indexed [row = y, col = x], pixel (k//2, k//2) covering offsets [-0.5, 0.5]^2.
    """
    mean = np.asarray(mean, np.float64)
    cov = np.asarray(cov, np.float64)
    half = psf_size // 2
    edges = np.arange(-half - 0.5, half + 1.0, 1.0)  # k + 1 pixel edges
    sx = np.sqrt(cov[..., 0, 0])
    sy = np.sqrt(cov[..., 1, 1])
    rho = np.clip(cov[..., 0, 1] / (sx * sy), -1 + 1e-12, 1 - 1e-12)
    u = (edges - mean[..., 0, None]) / sx[..., None]  # [..., k+1] standardised x edges
    v = (edges - mean[..., 1, None]) / sy[..., None]
    cdf = bivariate_normal_cdf(v[..., :, None], u[..., None, :], rho[..., None, None])  # [..., y, x]
    mass = cdf[..., 1:, 1:] - cdf[..., :-1, 1:] - cdf[..., 1:, :-1] + cdf[..., :-1, :-1]
    return np.clip(mass, 0.0, None)


@dataclass
class GaussianPSF:
    """Options of the ``gaussian`` type (pixels; h = 1 at the sensor corner).

    sigma_px: on-axis standard deviation (both directions).
    sigma_corner_radial_px / sigma_corner_tangential_px: standard deviations at the corner,
        along and across the radial direction.
    field_exponent: how the widths grow with h (2 = quadratic, like field curvature/astigmatism).
    channel_scale: per-channel width factor; default lambda_c / median(lambda) (diffraction-like).
    lateral_color_px: per-channel outward shift at h = 1 (lateral colour), default 0.
    """

    sigma_px: float = 0.8
    sigma_corner_radial_px: float = 2.5
    sigma_corner_tangential_px: float = 1.5
    field_exponent: float = 2.0
    channel_scale: list[float] | None = None
    lateral_color_px: list[float] | float = 0.0

    def __post_init__(self):
        for name in ("sigma_px", "sigma_corner_radial_px", "sigma_corner_tangential_px"):
            if not float(getattr(self, name)) > 0:
                raise ConfigError(f"gaussian {name} must be > 0, got {getattr(self, name)}")
        if not float(self.field_exponent) >= 0:
            raise ConfigError(f"gaussian field_exponent must be >= 0, got {self.field_exponent}")

    def covariances(self, ctx) -> tuple[np.ndarray, np.ndarray]:
        """Means [C, N, 2] and covariances [C, N, 2, 2] in pixels."""
        geom = ctx.geometry
        h = geom.field_height()
        direction = geom.field_direction()  # [N, 2]
        grow = h ** float(self.field_exponent)
        s_rad = self.sigma_px + (self.sigma_corner_radial_px - self.sigma_px) * grow
        s_tan = self.sigma_px + (self.sigma_corner_tangential_px - self.sigma_px) * grow
        lam = np.asarray(ctx.wavelengths_nm)
        scale = ctx.per_channel("channel_scale", self.channel_scale) if self.channel_scale is not None \
            else list(lam / np.median(lam))
        if min(scale) <= 0:
            raise ConfigError(f"gaussian channel_scale must be > 0, got {scale}")
        shift = ctx.per_channel("lateral_color_px", self.lateral_color_px)
        radial = direction  # (cos t, sin t)
        tangential = np.stack([-direction[:, 1], direction[:, 0]], axis=1)
        base = (s_rad[:, None, None] ** 2 * radial[:, :, None] * radial[:, None, :]
                + s_tan[:, None, None] ** 2 * tangential[:, :, None] * tangential[:, None, :])  # [N, 2, 2]
        cov = np.stack([base * sc ** 2 for sc in scale])  # [C, N, 2, 2]
        mean = np.stack([radial * (d * h)[:, None] for d in shift])  # [C, N, 2]
        return mean, cov

    def simulate(self, ctx):
        mean, cov = self.covariances(ctx)
        psfs = pixel_integrated_gaussian(mean, cov, ctx.psf_size)  # [C, N, k, k]
        if ctx.progress is not None:
            ctx.progress(psfs.shape[0] * psfs.shape[1])
        return torch.from_numpy(psfs), {}
