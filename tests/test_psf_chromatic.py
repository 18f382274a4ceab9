"""Chromatic aberration of the seidel type: lateral colour (magnification per channel) moves each
channel's centroid by lateral_color[c] * r; axial colour (defocus per wavelength) equals the thin-lens
defocus computed by hand from a Cauchy glass (n = A + B / lambda², fitted to n_d and V_d)."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from psf.depth import LINE_C_NM, LINE_D_NM, LINE_F_NM, thin_lens_focal_length_mm
from psf.svpsf import PSFSimulator

WAVES = [610.0, 530.0, 470.0]
PITCH = 2.0


def centroid_px(psf: torch.Tensor) -> np.ndarray:
    k = psf.shape[-1]
    c = torch.arange(k, dtype=torch.float64) - k // 2
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    p = psf.double() / psf.double().sum()
    return np.array([float((p * xx).sum()), float((p * yy).sum())])


def test_lateral_color_moves_centroids_by_the_magnification_difference():
    lateral = [0.004, 0.0, -0.003]  # m_c / m_ref - 1
    kw = dict(grid_shape=(3, 3), psf_size=33, sensor_res=(301, 301), wavelengths_nm=WAVES, pixel_pitch_um=PITCH,
              f_number=4.0, seidel={"W040": 0.3, "W020": -0.3})
    base = PSFSimulator("seidel", **kw).simulate()
    field = PSFSimulator("seidel", lateral_color=lateral, **kw).simulate()
    offsets = field.positions - np.array([150.0, 150.0])  # node minus the optical axis (px)
    worst = 0.0
    for c in range(3):
        for n in range(9):
            moved = centroid_px(field.psfs[c, 0, n]) - centroid_px(base.psfs[c, 0, n])
            worst = max(worst, float(np.abs(moved - lateral[c] * offsets[n]).max()))
    assert worst < 0.05  # px; the corner moves by 0.85 px in red
    assert float(np.hypot(*(lateral[0] * offsets).T).max()) > 0.8


def test_axial_color_waves_is_per_channel_defocus():
    axial = [0.4, 0.0, -0.5]  # waves of W020 at the reference wavelength
    kw = dict(grid_shape=(1, 1), psf_size=21, sensor_res=(21, 21), pixel_pitch_um=PITCH, f_number=4.0)
    field = PSFSimulator("seidel", wavelengths_nm=WAVES, axial_color_waves=axial, **kw).simulate()
    for c, lam in enumerate(WAVES):
        alone = PSFSimulator("seidel", wavelengths_nm=[lam], seidel={"W020": axial[c]}, **kw).simulate()
        torch.testing.assert_close(field.psfs[c], alone.psfs[0], atol=1e-7, rtol=0)


def cauchy_by_hand(lam, n_d=1.5168, v_d=64.17):
    # V_d = (n_d - 1) / (n(F) - n(C)) with n = A + B / lambda², and n(d) = n_d
    b = (n_d - 1) / v_d / (1 / 486.13 ** 2 - 1 / 656.27 ** 2)
    return n_d - b / 587.56 ** 2 + b / lam ** 2


def test_thin_lens_dispersion_by_hand():
    assert (LINE_D_NM, LINE_F_NM, LINE_C_NM) == (587.56, 486.13, 656.27)
    f_d = 25.0
    f_f = thin_lens_focal_length_mm(f_d, 587.56, 486.13, 1.5168, 64.17)
    f_c = thin_lens_focal_length_mm(f_d, 587.56, 656.27, 1.5168, 64.17)
    # longitudinal colour of a thin lens: f_C - f_F ~ f / V (Hecht, Optics, sec. 6.3.2), to first order
    assert f_c - f_f == pytest.approx(f_d / 64.17, rel=0.01)
    assert thin_lens_focal_length_mm(f_d, 587.56, 587.56, 1.5168, 64.17) == f_d


def test_axial_color_from_glass_equals_hand_defocus():
    """Focused at 2 m for 550 nm; each channel's defocus (D²/8)(1/v_f - 1/v_lambda), f_lambda from the
    lensmaker's 1/f ∝ n - 1 with the hand Cauchy law; blue focuses in front of the sensor (W020 < 0)."""
    f_mm, n, s_f, ref = 50.0, 2.0, 2.0, 550.0
    lens = dict(focal_length_mm=f_mm, focus_distance_m=s_f, f_number=n, reference_wavelength_nm=ref)
    kw = dict(grid_shape=(1, 1), psf_size=31, sensor_res=(31, 31), pixel_pitch_um=PITCH)
    field = PSFSimulator("seidel", wavelengths_nm=WAVES, abbe_number=64.17, **lens, **kw).simulate()
    d = f_mm / n
    v_f = f_mm * 2000 / (2000 - f_mm)
    hand = []
    for c, lam in enumerate(WAVES):
        f_lam = f_mm * (cauchy_by_hand(ref) - 1) / (cauchy_by_hand(lam) - 1)
        v_lam = f_lam * 2000 / (2000 - f_lam)
        w020_um = d ** 2 / 8 * (1 / v_f - 1 / v_lam) * 1e3
        hand.append(w020_um / (lam * 1e-3))  # waves at lambda
        # the same PSF from the plain defocus term (coefficients are waves at the reference wavelength)
        alone = PSFSimulator("seidel", wavelengths_nm=[lam], seidel={"W020": w020_um / (ref * 1e-3)}, **lens,
                             **kw).simulate()
        torch.testing.assert_close(field.psfs[c], alone.psfs[0], atol=1e-7, rtol=0)
    assert hand[2] < 0 < hand[0] and abs(hand[2]) > 0.3  # blue in front, red behind, a visible defocus
    plain = PSFSimulator("seidel", wavelengths_nm=WAVES, **lens, **kw).simulate()
    assert float(plain.psfs[2].max()) > 1.2 * float(field.psfs[2].max())  # blue loses peak with the glass
