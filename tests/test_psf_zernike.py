"""Zernike polynomials (Noll 1976) and the ``zernike`` PSF type."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from psf.svpsf import PSFSimulator
from psf.zernike import noll_to_nm, zernike, zernike_basis
from utils.errors import ConfigError, DataError

# Noll (1976), Table I, written out independently of the general formula.
NOLL_TABLE = {
    1: (0, 0, lambda r, t: np.ones_like(r)),
    2: (1, 1, lambda r, t: 2 * r * np.cos(t)),
    3: (1, -1, lambda r, t: 2 * r * np.sin(t)),
    4: (2, 0, lambda r, t: math.sqrt(3) * (2 * r ** 2 - 1)),
    5: (2, -2, lambda r, t: math.sqrt(6) * r ** 2 * np.sin(2 * t)),
    6: (2, 2, lambda r, t: math.sqrt(6) * r ** 2 * np.cos(2 * t)),
    7: (3, -1, lambda r, t: math.sqrt(8) * (3 * r ** 3 - 2 * r) * np.sin(t)),
    8: (3, 1, lambda r, t: math.sqrt(8) * (3 * r ** 3 - 2 * r) * np.cos(t)),
    9: (3, -3, lambda r, t: math.sqrt(8) * r ** 3 * np.sin(3 * t)),
    10: (3, 3, lambda r, t: math.sqrt(8) * r ** 3 * np.cos(3 * t)),
    11: (4, 0, lambda r, t: math.sqrt(5) * (6 * r ** 4 - 6 * r ** 2 + 1)),
    22: (6, 0, lambda r, t: math.sqrt(7) * (20 * r ** 6 - 30 * r ** 4 + 12 * r ** 2 - 1)),
}


def test_noll_indices_and_closed_forms():
    rng = np.random.default_rng(0)
    r = rng.uniform(0, 1, 200)
    t = rng.uniform(-math.pi, math.pi, 200)
    x, y = torch.from_numpy(r * np.cos(t)), torch.from_numpy(r * np.sin(t))
    for j, (n, m, closed) in NOLL_TABLE.items():
        assert noll_to_nm(j) == (n, m)
        np.testing.assert_allclose(zernike(j, x, y).numpy(), closed(r, t), atol=1e-12)


def test_modes_1_to_11_orthonormal_on_unit_disk():
    """Gauss-Legendre in r (weight r dr) x uniform theta: exact for these polynomials."""
    nodes, weights = np.polynomial.legendre.leggauss(24)
    r = 0.5 * (nodes + 1)
    wr = 0.5 * weights * r
    n_t = 64
    t = 2 * math.pi * np.arange(n_t) / n_t
    rr, tt = np.meshgrid(r, t, indexing="ij")
    w = (wr[:, None] * np.full(n_t, 2 * math.pi / n_t)[None]) / math.pi  # mean over the disk
    z = zernike_basis(11, torch.from_numpy(rr * np.cos(tt)), torch.from_numpy(rr * np.sin(tt))).numpy()
    gram = np.einsum("iab,jab,ab->ij", z, z, w)
    rms = np.sqrt(np.diag(gram))
    np.testing.assert_allclose(rms, 1.0, atol=1e-3)
    np.testing.assert_allclose(gram, np.eye(11), atol=1e-9)


KW = dict(grid_shape=(1, 1), psf_size=31, sensor_res=(32, 32), wavelengths_nm=[550.0], pixel_pitch_um=0.5,
          f_number=4.0, reference_wavelength_nm=550.0)


def test_zernike_defocus_and_spherical_equal_seidel():
    """Z4 = sqrt(3)(2 rho^2 - 1): a4 -> W020 = 2 sqrt(3) a4; Z11 = sqrt(5)(6 rho^4 - 6 rho^2 + 1):
    a11 -> W040 = 6 sqrt(5) a11, W020 = -6 sqrt(5) a11 (piston does not change the PSF)."""
    z = PSFSimulator("zernike", coefficients={4: 0.12, 11: 0.05}, **KW).simulate().psfs
    s = PSFSimulator("seidel", seidel={"W020": 2 * math.sqrt(3) * 0.12 - 6 * math.sqrt(5) * 0.05,
                                       "W040": 6 * math.sqrt(5) * 0.05}, **KW).simulate().psfs
    assert torch.allclose(z, s, atol=1e-6 * float(s.max()))


def test_tilt_direction():
    """Z2 = 2 rho cos(theta) with a2 waves: image shift +2 N lambda (2 a2) along +x; Z3 along +y."""
    shift_px = 3
    a = shift_px * 0.5 / (2 * 4.0 * 0.55 * 2)
    for j, axis in ((2, 1), (3, 0)):
        psf = PSFSimulator("zernike", coefficients={j: a}, **KW).simulate().psfs[0, 0, 0]
        peak = np.unravel_index(int(psf.argmax()), psf.shape)
        expected = [15, 15]
        expected[axis] += shift_px
        assert list(peak) == expected


def sim_random(seed, **kw):
    return PSFSimulator("zernike", grid_shape=(9, 9), psf_size=15, sensor_res=(90, 120), seed=seed,
                        wavelengths_nm=[550.0], pixel_pitch_um=3.0, **kw)


def test_random_field_seeded_smooth_and_scaled():
    a = sim_random(3, rms_waves=0.2).options.node_coefficients(ctx(sim_random(3)))
    b = sim_random(3, rms_waves=0.2).options.node_coefficients(ctx(sim_random(3)))
    c = sim_random(4, rms_waves=0.2).options.node_coefficients(ctx(sim_random(4)))
    assert np.array_equal(a, b) and not np.allclose(a, c)
    assert a.shape == (81, 15) and np.all(a[:, :3] == 0)  # piston, tip, tilt excluded by default
    assert math.sqrt(np.mean(np.sum(a ** 2, axis=1))) == pytest.approx(0.2)
    grid = a.reshape(9, 9, 15)
    second_diff = np.abs(grid[:, 2:] - 2 * grid[:, 1:-1] + grid[:, :-2]).max()
    assert second_diff < 0.1 * (grid.max() - grid.min())  # smooth over the field (quadratic)
    field = sim_random(3, rms_waves=0.2).simulate()
    np.testing.assert_allclose(np.asarray(field.attrs["zernike_coefficients"]), a, rtol=1e-6, atol=1e-7)


def ctx(sim):
    from psf.svpsf import SimulationContext

    return SimulationContext(sim.geometry, sim.psf_size, sim.wavelengths_nm, sim.pixel_pitch_um,
                             torch.Generator().manual_seed(sim.seed), torch.device("cpu"))


def test_coefficient_map(tmp_path):
    coefs = np.zeros((3, 4, 6))
    coefs[..., 3] = np.linspace(0, 0.3, 12).reshape(3, 4)  # defocus growing over the field
    path = tmp_path / "coefs.npy"
    np.save(path, coefs)
    sim = PSFSimulator("zernike", grid_shape=(3, 4), psf_size=15, sensor_res=(60, 80), coefficient_map=str(path),
                       wavelengths_nm=[550.0], pixel_pitch_um=2.0, f_number=4.0)
    field = sim.simulate()
    peaks = field.psfs[0, 0].amax(dim=(-2, -1))
    assert torch.all(peaks[1:] < peaks[:-1])  # more defocus, lower peak, node order row-major
    with pytest.raises(ConfigError, match=r"must be \[J\], \[N=12, J\]"):
        PSFSimulator("zernike", grid_shape=(3, 4), coefficient_map=np.zeros((5, 6))).simulate()
    with pytest.raises(DataError, match="not found"):
        PSFSimulator("zernike", grid_shape=(3, 4), coefficient_map=str(tmp_path / "missing.npy")).simulate()
    with pytest.raises(ConfigError, match="either"):
        PSFSimulator("zernike", coefficients={4: 0.1}, coefficient_map=coefs)
