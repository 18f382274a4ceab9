"""MTF tools (psf/mtf.py, scripts/mtf.py) against closed forms: the diffraction-limited MTF of a
circular pupil (Goodman eq. 6-31), the Gaussian MTF exp(-2 pi² sigma² f²), an FFT of the PSF."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from psf.field import save_psf_field
from psf.mtf import (diffraction_cutoff_cyc_per_mm, diffraction_mtf, field_mtf, gaussian_mtf50_cpp, mtf50, mtf_along,
                     otf_along)
from psf.svpsf import PSFSimulator

ROOT = Path(__file__).resolve().parent.parent


def sampled_gaussian(sigma, k=25, cx=0.0, cy=0.0):
    c = np.arange(k) - k // 2
    yy, xx = np.meshgrid(c, c, indexing="ij")
    g = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma ** 2))
    return torch.from_numpy(g / g.sum())


def test_otf_matches_fft_on_its_grid():
    psf = torch.rand(15, 15, dtype=torch.float64)
    fft = torch.fft.fft2(torch.fft.ifftshift(psf))  # centre [7, 7] moved to index 0
    freqs = np.arange(8) / 15
    torch.testing.assert_close(otf_along(psf, [1.0, 0.0], freqs), fft[0, :8])
    torch.testing.assert_close(otf_along(psf, [0.0, 1.0], freqs), fft[:8, 0])


def test_diffraction_limited_mtf_with_pixel_divided_out():
    """Aberration-free seidel PSF, 550 nm, f/4, 1 um pixels (cutoff 454.5 cycles/mm below the 500
    cycles/mm Nyquist, so nothing aliases): within 0.01 of the closed form up to the cutoff (measured
    0.0075 at k = 129; the residual is the ~0.5 % of the Airy energy outside the computation, a scale)."""
    field = PSFSimulator("seidel", grid_shape=(1, 1), psf_size=129, sensor_res=(129, 129), wavelengths_nm=[550.0],
                         pixel_pitch_um=1.0, f_number=4.0).simulate()
    result = field_mtf(field, n_freqs=401, divide_pixel=True)
    mm = result.freqs_cyc_per_mm
    cutoff = diffraction_cutoff_cyc_per_mm(550.0, 4.0)
    assert cutoff == pytest.approx(1e3 / (0.55 * 4))
    inside = mm <= cutoff
    expected = diffraction_mtf(mm, 550.0, 4.0)
    for curve in (result.tangential[0, 0], result.sagittal[0, 0]):
        assert np.abs(curve - expected)[inside].max() < 0.01
    # the pixel aperture matters: without dividing it out the curves sit well below
    raw = field_mtf(field, n_freqs=401).tangential[0, 0]
    assert np.abs(raw - expected)[inside].max() > 0.025
    np.testing.assert_allclose(result.diffraction()[0], expected)


def test_gaussian_mtf50_closed_form():
    """sigma = 1.5 px: MTF50 = sqrt(ln 2 / 2) / (pi sigma) cycles/px, within 1 % (measured 4e-7),
    along x, y and the diagonal; and for step 1's pixel-integrated gaussian type with the pixel divided out."""
    expected = gaussian_mtf50_cpp(1.5)
    assert expected == pytest.approx(0.124927, abs=1e-6)
    freqs = np.linspace(0, 0.5, 1001)
    psf = sampled_gaussian(1.5)
    for direction in ([1.0, 0.0], [0.0, 1.0], [math.sqrt(0.5), math.sqrt(0.5)]):
        assert float(mtf50(freqs, mtf_along(psf, direction, freqs))) == pytest.approx(expected, rel=0.01)
        assert float(mtf50(freqs, mtf_along(psf, direction, freqs))) == pytest.approx(expected, rel=1e-4)
    field = PSFSimulator("gaussian", grid_shape=(1, 1), psf_size=21, sensor_res=(21, 21), wavelengths_nm=[550.0],
                         sigma_px=1.5, sigma_corner_radial_px=1.5, sigma_corner_tangential_px=1.5,
                         channel_scale=[1.0]).simulate()
    result = field_mtf(field, n_freqs=1001, divide_pixel=True)
    assert float(result.mtf50()["tangential"][0, 0]) == pytest.approx(expected, rel=0.01)
    pixel_included = field_mtf(field, n_freqs=1001).mtf50()["tangential"][0, 0]
    assert pixel_included < 0.99 * expected  # the pixel aperture lowers it


def test_mtf_is_shift_invariant():
    """A sub-pixel shift changes the OTF's phase, not its modulus (up to the window's sampling)."""
    freqs = np.linspace(0, 0.5, 101)
    a = mtf_along(sampled_gaussian(1.2), [1.0, 0.0], freqs)
    b = mtf_along(sampled_gaussian(1.2, cx=0.4, cy=-0.3), [1.0, 0.0], freqs)
    assert np.abs(a - b).max() < 2e-3


def test_tangential_and_sagittal_directions():
    """A node on the +x axis blurred along x (radially) loses tangential, not sagittal MTF; the roles
    swap for a node on the y axis. Uses the gaussian type: radial sigma 3, tangential sigma 1."""
    field = PSFSimulator("gaussian", grid_shape=(3, 3), psf_size=25, sensor_res=(101, 101), wavelengths_nm=[550.0],
                         sigma_px=3.0, sigma_corner_radial_px=3.0, sigma_corner_tangential_px=1.0, field_exponent=0.0,
                         channel_scale=[1.0]).simulate()
    result = field_mtf(field, n_freqs=201, divide_pixel=True)
    m50 = result.mtf50()
    for node in (5, 7, 8):  # right of centre, below centre, the corner
        # pixel-integrated elliptical gaussian: MTF50 of sigma 3 along the radius, sigma 1 across it
        assert m50["tangential"][0, node] == pytest.approx(gaussian_mtf50_cpp(3.0), rel=0.01)
        assert m50["sagittal"][0, node] == pytest.approx(gaussian_mtf50_cpp(1.0), rel=0.01)
    assert result.field_height[4] == 0.0 and result.field_height[8] == pytest.approx(1.0)


def test_mtf_script(tmp_path):
    field = PSFSimulator("seidel", grid_shape=(3, 3), psf_size=21, sensor_res=(101, 101), pixel_pitch_um=2.0,
                         f_number=4.0, seidel={"W131": 0.5, "W222": 0.3}).simulate()
    save_psf_field(field, tmp_path / "psfs.h5")
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "mtf.py"), "--psf_data_path", str(tmp_path),
                          "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out" / "mtf.png").stat().st_size > 10_000
    summary = json.loads((tmp_path / "out" / "mtf.json").read_text())
    assert len(summary["mtf50_tangential_cpp"]) == 3 and len(summary["mtf50_tangential_cpp"][0]) == 9
    assert summary["diffraction_cutoff_cyc_per_mm"] == pytest.approx(
        [diffraction_cutoff_cyc_per_mm(w, 4.0) for w in (610, 530, 470)])
    bad = subprocess.run([sys.executable, str(ROOT / "scripts" / "mtf.py"), "--psf_data_path", str(tmp_path / "nope")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "not found" in bad.stderr
    helped = subprocess.run([sys.executable, str(ROOT / "scripts" / "mtf.py"), "--help"], capture_output=True,
                            text=True, timeout=60)
    assert helped.returncode == 0 and "--divide_pixel" in helped.stdout
