"""Seidel field dependence against the wavefront's closed forms (Wyant & Creath 1992):
zero on axis, powers of h, direction from the field point, ray-aberration magnitudes."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from psf.svpsf import PSFSimulator
from utils.errors import ConfigError

LAM, N, PITCH = 550.0, 4.0, 1.0
LAM_N = LAM * 1e-3 * N


def simulate(seidel, grid=(5, 5), sensor=(201, 201), k=25, pitch=PITCH):
    """One channel at the reference wavelength, so the coefficients are waves at LAM."""
    return PSFSimulator("seidel", grid_shape=grid, psf_size=k, sensor_res=sensor, wavelengths_nm=[LAM],
                        pixel_pitch_um=pitch, f_number=N, reference_wavelength_nm=LAM, seidel=seidel).simulate()


ROW = dict(grid=(1, 5), sensor=(1, 201))  # nodes along x at h = 1, 0.5, 0, 0.5, 1


def node(field, row, col):
    return field.psfs[0, 0, row * field.grid_shape[1] + col].double()


def centroid_um(psf, pitch=PITCH):
    k = psf.shape[-1]
    yy, xx = torch.meshgrid(torch.arange(k, dtype=psf.dtype) - k // 2, torch.arange(k, dtype=psf.dtype) - k // 2,
                            indexing="ij")
    return float((psf * xx).sum() / psf.sum()) * pitch, float((psf * yy).sum() / psf.sum()) * pitch


def close(a, b, tol=2e-6):
    return float((a - b).abs().max()) <= tol * float(b.max())


def test_field_geometry_5x5():
    """Nodes of the 5 x 5 grid on 201 x 201: (0,0) is the corner (h = 1), (1,1) h = 0.5, (2,2) the axis."""
    from psf.field import default_H_img
    from psf.svpsf import FieldGeometry

    g = FieldGeometry((5, 5), (201, 201), default_H_img((5, 5), (201, 201)))
    h = g.field_height().reshape(5, 5)
    assert h[0, 0] == pytest.approx(1.0) and h[1, 1] == pytest.approx(0.5) and h[2, 2] == 0.0
    np.testing.assert_allclose(g.field_direction()[0], [-math.sqrt(0.5), -math.sqrt(0.5)])
    np.testing.assert_allclose(g.field_direction()[14], [1.0, 0.0])  # (row 2, col 4): right of centre


def test_field_terms_vanish_on_axis():
    with_field = simulate({"W040": 0.4, "W131": 0.8, "W222": 0.6, "W220": 0.5, "W311": 2.0}, **ROW)
    axial = simulate({"W040": 0.4}, **ROW)
    assert close(node(with_field, 0, 2), node(axial, 0, 2), tol=1e-9)
    assert not close(node(with_field, 0, 3), node(axial, 0, 3), tol=1e-2)


@pytest.mark.parametrize("term,power", [("W131", 1), ("W222", 2), ("W220", 2), ("W311", 3)])
def test_field_powers(term, power):
    """W131 h, W222 h^2, W220 h^2, W311 h^3: the corner (h = 1) PSF with coefficient a equals the
    PSF at h = 0.5 in the same direction with coefficient a * 2^power."""
    a = 0.6 if term != "W311" else 0.5
    edge = node(simulate({term: a}, **ROW), 0, 4)
    half = node(simulate({term: a * 2 ** power}, **ROW), 0, 3)
    assert close(half, edge)
    assert not close(node(simulate({term: a * 2 ** (power - 1)}, **ROW), 0, 3), edge, tol=1e-3)


def test_field_curvature_is_defocus_growing_with_h2():
    """W220 h^2 rho^2 at the corner is exactly the on-axis defocus W020 = W220."""
    assert close(node(simulate({"W220": 0.7}, **ROW), 0, 4), node(simulate({"W020": 0.7}, **ROW), 0, 2))


def test_theta_measured_from_field_direction():
    """Rotating the node by -90 degrees about the axis rotates its PSF the same way."""
    f = simulate({"W131": 0.8, "W222": 0.5, "W040": 0.3})
    right = node(f, 2, 4).numpy()  # direction (1, 0)
    top = node(f, 0, 2).numpy()  # direction (0, -1)
    np.testing.assert_allclose(top, right[:, ::-1].T, atol=1e-6 * right.max())


def test_coma_mirror_symmetric_about_radial_direction():
    f = simulate({"W131": 1.0})
    right = node(f, 2, 4)  # radial = +x: symmetric under y -> -y
    assert close(right.flip(0), right, tol=1e-6)
    assert not close(right.flip(1), right, tol=1e-2)  # and clearly asymmetric along the radius
    corner = node(f, 0, 0)  # radial = diagonal: symmetric under the swap x <-> y
    assert close(corner.T, corner, tol=1e-6)


def test_coma_centroid_shift_closed_form():
    """Centroid = 2 N lambda <grad W> over the pupil; for W131 h rho^3 cos: 2 N lambda W131 h.

    The flare of coma reaches far along the radius, so the centroid of the k-pixel window falls
    short of the full-plane value by the cut tails (5 % at 41 px, 2.5 % at 81 px, 1.2 % at 161 px)."""
    w131 = 0.5
    f = simulate({"W131": w131}, k=81, **ROW)  # nodes at h = 1, 0.5, 0, 0.5, 1
    for col, h, sign in [(0, 1.0, -1), (1, 0.5, -1), (3, 0.5, 1), (4, 1.0, 1)]:
        cx, cy = centroid_um(node(f, 0, col))
        assert sign * cx == pytest.approx(2 * N * LAM * 1e-3 * w131 * h, rel=0.03)
        assert abs(cy) < 1e-5
    assert abs(centroid_um(node(f, 0, 2))[0]) < 1e-5


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_distortion_shift_radial(sign):
    """W311 moves the PSF by 2 N lambda W311 h^3 along the field direction (outward for W311 > 0)."""
    w311 = sign * 2.0
    f = simulate({"W311": w311}, k=41)
    for (row, col), h in [((0, 0), 1.0), ((1, 1), 0.5), ((2, 4), 100 / math.hypot(100, 100))]:
        cx, cy = centroid_um(node(f, row, col))
        direction = np.array([col * 50 - 100.0, row * 50 - 100.0])
        direction /= np.linalg.norm(direction)
        expected = 2 * N * LAM * 1e-3 * w311 * h ** 3 * direction
        np.testing.assert_allclose([cx, cy], expected, atol=0.02 * abs(expected).max() + 0.01)
    # Outward = away from the sensor centre: the corner node (0, 0) moves up-left for W311 > 0.
    cx, cy = centroid_um(node(f, 0, 0))
    assert np.sign(cx) == np.sign(cy) == -sign


def test_astigmatism_focal_line_length():
    """Geometric optics for W222 h^2 rho^2 cos^2: rays move only radially, by 4 N lambda W222 h^2 x
    (x = pupil coordinate along the radius, semicircle-distributed), so the radial marginal has
    interquartile range 2 * 0.40397 * 4 N lambda W222 h^2; tangentially it stays diffraction-limited."""
    w222 = 6.0
    f = simulate({"W222": w222}, grid=(1, 3), sensor=(1, 201), k=131)  # node (0, 2): h = 1, direction +x
    psf = node(f, 0, 2).numpy()
    k = psf.shape[0]
    x = (np.arange(k) - k // 2) * PITCH

    def iqr(marginal):
        cdf = np.cumsum(marginal) / marginal.sum()
        edges = x + PITCH / 2  # cdf[i] = mass up to the right edge of pixel i
        return np.interp(0.75, cdf, edges) - np.interp(0.25, cdf, edges)

    a = 4 * N * LAM * 1e-3 * w222
    assert iqr(psf.sum(axis=0)) == pytest.approx(2 * 0.40397 * a, rel=0.03)
    assert iqr(psf.sum(axis=1)) < 2 * LAM_N


def test_unknown_seidel_term():
    with pytest.raises(ConfigError, match="unknown Seidel coefficient 'W13'; did you mean 'W131'"):
        PSFSimulator("seidel", seidel={"W13": 0.1})
