"""``gaussian`` PSFs: exact pixel integration, moments, radial orientation, colour."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import erf
from scipy.stats import multivariate_normal

from psf.gaussian import bivariate_normal_cdf, pixel_integrated_gaussian
from psf.svpsf import FieldGeometry, PSFSimulator


def moments(psf):
    """Centroid (x, y) and 2 x 2 second central moment matrix of a [k, k] PSF (pixels)."""
    psf = np.asarray(psf, np.float64)
    k = psf.shape[-1]
    yy, xx = np.mgrid[:k, :k] - k // 2
    m = psf.sum()
    cx, cy = (psf * xx).sum() / m, (psf * yy).sum() / m
    dx, dy = xx - cx, yy - cy
    cov = np.array([[(psf * dx * dx).sum(), (psf * dx * dy).sum()], [(psf * dx * dy).sum(), (psf * dy * dy).sum()]]) / m
    return np.array([cx, cy]), cov


def test_bivariate_cdf_matches_scipy():
    rng = np.random.default_rng(1)
    for _ in range(50):
        h, k = rng.normal(0, 1.5, 2)
        rho = rng.uniform(-0.95, 0.95)
        ref = multivariate_normal(mean=[0, 0], cov=[[1, rho], [rho, 1]]).cdf([h, k])
        assert bivariate_normal_cdf(h, k, rho) == pytest.approx(ref, abs=1e-7)
    # exact values on the axes: Phi2(0, 0; rho) = 1/4 + asin(rho) / (2 pi)
    for rho in (-0.6, 0.0, 0.3):
        assert bivariate_normal_cdf(0.0, 0.0, rho) == pytest.approx(0.25 + math.asin(rho) / (2 * math.pi), abs=1e-14)


@pytest.mark.parametrize("sigma", [0.15, 0.4, 1.3])
def test_axis_aligned_equals_erf_product(sigma):
    k = 15
    mass = pixel_integrated_gaussian(np.array([0.3, -0.2]), np.diag([sigma ** 2, (1.7 * sigma) ** 2]), k)
    edges = np.arange(k + 1) - k // 2 - 0.5
    px = np.diff(0.5 * erf((edges - 0.3) / (math.sqrt(2) * sigma)))
    py = np.diff(0.5 * erf((edges + 0.2) / (math.sqrt(2) * 1.7 * sigma)))
    np.testing.assert_allclose(mass, py[:, None] * px[None, :], atol=1e-12)


def test_rotated_pixel_mass_against_scipy():
    cov = np.array([[2.0, 1.1], [1.1, 1.0]])
    mean = np.array([0.25, 0.1])
    mass = pixel_integrated_gaussian(mean, cov, 9)
    dist = multivariate_normal(mean=mean, cov=cov)
    for row, col in [(4, 4), (3, 5), (6, 2), (1, 7)]:
        x0, y0 = col - 4 - 0.5, row - 4 - 0.5
        ref = (dist.cdf([x0 + 1, y0 + 1]) - dist.cdf([x0, y0 + 1]) - dist.cdf([x0 + 1, y0]) + dist.cdf([x0, y0]))
        assert mass[row, col] == pytest.approx(ref, abs=2e-7)


def test_second_moments_include_pixel_variance():
    """Isotropic: E[r^2] = 2 sigma^2 + 2/12 (pixel integration adds 1/12 per axis); rotated: Sigma + I/12.
    (Sub-pixel sigmas are covered exactly by the erf/scipy comparisons above.)"""
    sigma = 1.6
    mass = pixel_integrated_gaussian(np.zeros(2), np.eye(2) * sigma ** 2, 41)
    _, cov = moments(mass)
    assert np.trace(cov) == pytest.approx(2 * sigma ** 2 + 2 / 12, rel=1e-6)
    rot = np.array([[2.5, -0.9], [-0.9, 1.2]])
    _, cov = moments(pixel_integrated_gaussian(np.zeros(2), rot, 41))
    np.testing.assert_allclose(cov, rot + np.eye(2) / 12, atol=1e-6)
    # Sub-pixel sigma: the discrete moment of pixel masses equals the continuous one up to aliasing
    # terms ~ exp(-2 pi^2 sigma^2) (Poisson summation); at sigma = 0.8 px that is ~1e-5.
    _, cov = moments(pixel_integrated_gaussian(np.zeros(2), np.eye(2) * 0.8 ** 2, 15))
    np.testing.assert_allclose(np.diag(cov), 0.64 + 1 / 12, rtol=1e-4)


def test_field_orientation_growth_and_colour():
    sim = PSFSimulator("gaussian", grid_shape=(5, 5), psf_size=31, sensor_res=(201, 201),
                       sigma_px=1.0, sigma_corner_radial_px=3.0, sigma_corner_tangential_px=1.5,
                       lateral_color_px=[0.6, 0.0, -0.6])
    field = sim.simulate()
    geom = FieldGeometry(sim.grid_shape, sim.sensor_res, sim.H_img)
    h, direction = geom.field_height(), geom.field_direction()
    lam = np.array(sim.wavelengths_nm)
    scale = lam / np.median(lam)
    for n in (0, 6, 12, 14):
        for c in range(3):
            centroid, cov = moments(field.psfs[c, 0, n].numpy())
            rad = direction[n]
            tan = np.array([-rad[1], rad[0]])
            s_r = 1.0 + 2.0 * h[n] ** 2
            s_t = 1.0 + 0.5 * h[n] ** 2
            assert rad @ cov @ rad == pytest.approx((scale[c] * s_r) ** 2 + 1 / 12, rel=1e-4)
            assert tan @ cov @ tan == pytest.approx((scale[c] * s_t) ** 2 + 1 / 12, rel=1e-4)
            assert rad @ cov @ tan == pytest.approx(0.0, abs=1e-5)
            np.testing.assert_allclose(centroid, [0.6, 0.0, -0.6][c] * h[n] * rad, atol=1e-5)
    # red (longest wavelength) widest, on axis too
    widths = [np.trace(moments(field.psfs[c, 0, 12].numpy())[1]) for c in range(3)]
    assert widths[0] > widths[1] > widths[2]
    assert field.psfs.sum(dim=(-2, -1)).sub(1).abs().max() < 1e-6
