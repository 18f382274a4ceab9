"""Wave-optics PSFs against closed forms: Airy pattern, Strehl of defocus, geometric blur,
exact pixel integration, centring, no wrap-around, RGB order."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import j0, j1

from psf.optics import incoherent_psfs, next_fast_len, plan_sampling
from psf.svpsf import PSFSimulator
from utils.errors import ConfigError

LAM, N = 550.0, 4.0
LAM_N = LAM * 1e-3 * N  # um


def flat(rx, ry):
    return torch.zeros(1, *rx.shape, dtype=torch.float64)


def defocus(w020):
    return lambda rx, ry: (w020 * (rx ** 2 + ry ** 2))[None]


def encircled(psf, pitch, radius, sub=16):
    """Energy within ``radius`` (um) of the window centre, splitting pixels into sub x sub parts.

    ``radius`` may be an array; returns an array then."""
    k = psf.shape[-1]
    o = (np.arange(sub) + 0.5) / sub - 0.5
    yy, xx = np.mgrid[:k, :k] - k // 2
    x = (xx[..., None, None] + o[None, None, :, None]) * pitch
    y = (yy[..., None, None] + o[None, None, None, :]) * pitch
    r = np.hypot(x, y).ravel()
    w = np.broadcast_to(np.asarray(psf)[..., None, None] / sub ** 2, (k, k, sub, sub)).ravel()
    order = np.argsort(r)
    cum = np.cumsum(w[order])
    idx = np.searchsorted(r[order], np.atleast_1d(radius), side="right")
    out = np.where(idx > 0, cum[np.maximum(idx - 1, 0)], 0.0)
    return out if np.ndim(radius) else float(out[0])


@pytest.fixture(scope="module")
def airy_fine():
    """Diffraction-limited PSF at pitch lambda N / 10 (pixel integration negligible)."""
    pitch = LAM_N / 10
    psf, plan = incoherent_psfs(flat, LAM, N, pitch, 61)
    return psf[0].numpy(), pitch, plan


def test_sampling_plan_is_nyquist():
    for lam, n, pitch in [(450, 1.4, 5.0), (650, 8.0, 1.0), (550, 2.8, 2.0), (550, 4.0, 0.22)]:
        plan = plan_sampling(lam, n, pitch, 33)
        assert plan.q >= 2.0  # lambda N / dx
        assert plan.n_fft == plan.oversample * plan.period_px
        assert plan.period_px >= 2 * 33 and plan.pupil_samples >= 96 - 1e-9
    assert [next_fast_len(n) for n in (1, 7, 66, 97, 121)] == [1, 8, 72, 100, 125]


def test_airy_first_zero_and_encircled_energy(airy_fine):
    psf, pitch, _ = airy_fine
    c = psf.shape[0] // 2
    # First minimum of the profile along x, refined by a parabola through the 3 lowest samples.
    prof = psf[c, c:]
    i = int(np.argmin(prof[5:20])) + 5
    a, b, d = prof[i - 1:i + 2]
    r0 = (i + 0.5 * (a - d) / (a - 2 * b + d)) * pitch
    assert r0 / (1.22 * LAM_N) == pytest.approx(1.0, abs=0.02)
    # Energy is normalised over the whole (untruncated) computed PSF.
    ee = encircled(psf, pitch, 1.2197 * LAM_N)
    assert ee == pytest.approx(0.838, abs=0.01)
    # The full curve: EE(r) = 1 - J0(v)^2 - J1(v)^2, v = pi r / (lambda N) (Born & Wolf 8.5.3),
    # compared as ratios to EE at the window radius so the energy beyond it does not matter
    # (radii >= lambda N: inside that the 0.1 lambda N pixels' own blur shows, ~0.7 % at 0.5).
    closed = lambda r: 1 - j0(math.pi * r / LAM_N) ** 2 - j1(math.pi * r / LAM_N) ** 2  # noqa: E731
    r_ref = 2.8 * LAM_N
    for r in (1.0, 1.22, 1.6, 2.2):
        assert encircled(psf, pitch, r * LAM_N) / encircled(psf, pitch, r_ref) == pytest.approx(
            closed(r * LAM_N) / closed(r_ref), rel=3e-3)


@pytest.mark.parametrize("a4", [0.05, 0.1])
def test_strehl_of_defocus(airy_fine, a4):
    """Noll Z4 = sqrt(3)(2 rho^2 - 1): W020 = 2 sqrt(3) a4, Strehl = [sin x / x]^2, x = 2 sqrt(3) pi a4."""
    ref, pitch, _ = airy_fine
    psf, _ = incoherent_psfs(defocus(2 * math.sqrt(3) * a4), LAM, N, pitch, 61)
    x = 2 * math.sqrt(3) * math.pi * a4
    assert float(psf.max()) / ref.max() == pytest.approx((math.sin(x) / x) ** 2, rel=0.01)


def test_strehl_zernike_type(airy_fine):
    """The same closed form through PSFSimulator(psf_type='zernike') with Noll a4 given."""
    ref, pitch, _ = airy_fine
    kw = dict(grid_shape=(1, 1), psf_size=61, sensor_res=(64, 64), wavelengths_nm=[LAM], pixel_pitch_um=pitch,
              f_number=N, reference_wavelength_nm=LAM)
    # psf values after window normalisation: compare each to its own diffraction-limited twin
    base = PSFSimulator("zernike", coefficients={4: 0.0}, **kw).simulate().psfs[0, 0, 0]
    for a4 in (0.05, 0.1):
        psf = PSFSimulator("zernike", coefficients={4: a4}, **kw).simulate().psfs[0, 0, 0]
        x = 2 * math.sqrt(3) * math.pi * a4
        # window energies differ slightly between the two; Strehl is defined on total energy
        assert float(psf.max() / base.max()) == pytest.approx((math.sin(x) / x) ** 2, rel=0.012)


def test_geometric_defocus_blur_diameter():
    """Large defocus: a uniform disk of diameter dz / N with W020 = dz / (8 N^2 lambda).

    Uniform disk of radius R: EE(r) = (r / R)^2, so the 50 % radius is R / sqrt(2)."""
    n, lam, pitch = 2.0, 500.0, 1.0
    dz_um = 120.0
    w020 = dz_um / (8 * n * n * lam * 1e-3)  # 15 waves
    psf, _ = incoherent_psfs(defocus(w020), lam, n, pitch, 91)
    psf = psf[0].numpy() / psf.sum().item()
    radii = np.linspace(20, 40, 401)
    ee = encircled(psf, pitch, radii)
    r50 = float(np.interp(0.5, ee, radii))
    assert 2 * math.sqrt(2) * r50 == pytest.approx(dz_um / n, rel=0.03)


def test_pixel_integration_is_exact():
    """Integrating over a pixel = summing the integrals over its 5 x 5 sub-pixels."""
    w = lambda rx, ry: (0.7 * (rx ** 2 + ry ** 2) ** 2 + 0.4 * (rx ** 2 + ry ** 2) * rx)[None]  # noqa: E731
    coarse, _ = incoherent_psfs(w, LAM, N, 2.0, 15)
    fine, _ = incoherent_psfs(w, LAM, N, 0.4, 75)
    binned = fine[0].reshape(15, 5, 15, 5).sum(dim=(1, 3))
    assert torch.allclose(coarse[0], binned, atol=2e-5, rtol=0)
    assert float((coarse[0] - binned).abs().max() / coarse.max()) < 1e-4


def test_symmetric_psf_centroid_at_centre():
    for pitch, k in [(0.5, 31), (3.0, 11)]:
        psf, _ = incoherent_psfs(defocus(1.5), LAM, N, pitch, k)
        psf = psf[0].numpy()
        yy, xx = np.mgrid[:k, :k]
        assert np.unravel_index(psf.argmax(), psf.shape) == (k // 2, k // 2)
        assert (psf * xx).sum() / psf.sum() == pytest.approx(k // 2, abs=1e-5)
        assert (psf * yy).sum() / psf.sum() == pytest.approx(k // 2, abs=1e-5)


def test_no_wrap_around():
    """A PSF tilted 12 px to the right in a 21 px window equals the untilted PSF cut from a wider
    window 12 px off centre: the part beyond the right edge is lost, nothing wraps to the left."""
    pitch, k, shift = 1.0, 21, 12
    tilt = shift * pitch / (2 * N * LAM * 1e-3)  # waves: image shift = 2 N lambda a
    tilted, _ = incoherent_psfs(lambda rx, ry: (tilt * rx)[None], LAM, N, pitch, k)
    wide, _ = incoherent_psfs(flat, LAM, N, pitch, 2 * (k // 2 + shift) + 1)
    c = k // 2 + shift
    expected = wide[0, c - k // 2:c + k // 2 + 1, 0:k]
    assert float(tilted.sum()) < 0.5
    assert torch.allclose(tilted[0], expected, atol=1e-6, rtol=0)
    assert int(tilted[0].sum(0).argmax()) == k - 1


def test_rgb_order_red_widest():
    """Channel 0 = red = longest wavelength = widest Airy disk; blue narrowest."""
    pitch, k = 0.15, 61
    sim = PSFSimulator("seidel", grid_shape=(1, 1), psf_size=k, sensor_res=(64, 64), pixel_pitch_um=pitch,
                       f_number=4.0, wavelengths_nm=[640.0, 540.0, 450.0])
    field = sim.simulate()
    assert field.channel_order == "RGB" and field.attrs["wavelengths_nm"] == [640.0, 540.0, 450.0]
    peaks = field.psfs[:, 0, 0].amax(dim=(-2, -1))
    assert peaks[0] < peaks[1] < peaks[2]  # same energy, wider disk -> lower peak
    zeros = []
    for c in range(3):
        prof = field.psfs[c, 0, 0, k // 2, k // 2:].double().numpy()
        i = int(np.argmin(prof[:25]))
        a, b, d = prof[i - 1:i + 2]
        zeros.append((i + 0.5 * (a - d) / (a - 2 * b + d)) * pitch)
    # first zeros at 1.22 lambda_c N
    np.testing.assert_allclose(zeros, [1.22 * lam * 1e-3 * 4.0 for lam in (640.0, 540.0, 450.0)], rtol=0.02)
    with pytest.raises(ConfigError, match="not in RGB order"):
        PSFSimulator("seidel", wavelengths_nm=[450.0, 540.0, 640.0])
