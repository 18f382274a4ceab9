"""PSF fields from captures: recovered from captures the project synthesises (known truth)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from psf.gaussian import pixel_integrated_gaussian
from psf.real import find_captures, fit_homography, fourier_shift, psf_field_from_captures, write_synthetic_captures
from psf.svpsf import PSFSimulator
from utils.errors import DataError
from utils.image_io import write_image

# Nodes inset from the frame edge, off-centre so no two nodes mirror each other through the axis.
H_TRUE = np.array([[40.0, 0.0, 20.0], [0.0, 40.0, 25.0], [0.0, 0.0, 1.0]])


def psnr(rec, truth):
    peak = float(truth.max())
    return 10 * np.log10(peak ** 2 / float(((rec.double() - truth.double()) ** 2).mean()))


@pytest.fixture(scope="module")
def seidel_truth():
    """Point-symmetric Seidel PSFs (spherical, astigmatism, curvature): centroid = node position."""
    return PSFSimulator("seidel", grid_shape=(3, 4), psf_size=21, sensor_res=(140, 180), H_img=H_TRUE,
                        pixel_pitch_um=1.5, f_number=4.0,
                        seidel={"W040": 0.8, "W020": -0.8, "W222": 1.0, "W220": 0.6}).simulate()


def test_recovers_seidel_field(tmp_path, seidel_truth):
    paths = write_synthetic_captures(seidel_truth, tmp_path, noise_sigma=0.002, peak=0.8)
    assert paths[5].name == "psf_01_01.png"
    rec = psf_field_from_captures(tmp_path, psf_size=21, subpixel=False)
    assert rec.psfs.shape == seidel_truth.psfs.shape == (3, 1, 12, 21, 21)
    assert rec.channel_order == "RGB" and rec.grid_shape == (3, 4) and rec.sensor_res == (140, 180)
    assert psnr(rec.psfs, seidel_truth.psfs) > 50  # measured 56.7 dB
    assert float((rec.psfs - seidel_truth.psfs).abs().max() / seidel_truth.psfs.max()) < 0.05  # measured 2.7 %
    # node order: each recovered PSF is closest to the truth of its own node
    dist = torch.cdist(rec.psfs[1, 0].flatten(1), seidel_truth.psfs[1, 0].flatten(1))
    assert torch.equal(dist.argmin(dim=1), torch.arange(12))
    np.testing.assert_allclose(rec.positions, seidel_truth.positions, atol=0.15)
    assert rec.attrs["position_rms_px"] < 0.1
    np.testing.assert_allclose(rec.attrs["noise_sigma"], 0.002, rtol=0.1)
    # sub-pixel centring on the same captures: centred by the (noisy) centroid, still close
    sub = psf_field_from_captures(tmp_path, psf_size=21)
    assert psnr(sub.psfs, seidel_truth.psfs) > 44  # measured 47.8 dB


def test_subpixel_centring(tmp_path):
    """Spots at random sub-pixel offsets (analytic pixel-integrated Gaussians): centring by
    centroid recovers the centred truth; whole-pixel centring cannot."""
    rng = np.random.default_rng(0)
    k, truths = 21, []
    scale = np.array([1.2, 1.0, 0.85])[:, None, None]
    for r in range(2):
        for c in range(3):
            cov = np.array([[1.6, 0.3 * c], [0.3 * c, 1.2 + 0.2 * r]])[None] * scale
            spot = pixel_integrated_gaussian(np.repeat(rng.uniform(-0.5, 0.5, (1, 2)), 3, 0), cov, k)
            truths.append(pixel_integrated_gaussian(np.zeros((3, 2)), cov, k))
            img = np.full((100, 140, 3), 0.05)
            x0, y0 = 30 + 40 * c, 30 + 40 * r
            img[y0 - 10:y0 + 11, x0 - 10:x0 + 11] += 0.8 * spot.transpose(1, 2, 0) / spot.max()
            img += rng.normal(0, 0.002, img.shape)
            write_image(tmp_path / f"spot_r{r}_c{c}.png", img.astype(np.float32), bits=16)
    truth = torch.from_numpy(np.stack(truths, 1))[:, None]
    rec = psf_field_from_captures(tmp_path, psf_size=k)
    whole = psf_field_from_captures(tmp_path, psf_size=k, subpixel=False)
    assert psnr(rec.psfs, truth) > 50  # measured 54 dB
    assert psnr(whole.psfs, truth) < 42  # measured 35 dB
    lum = rec.psfs[:, 0].double().mean(0)
    yy, xx = torch.meshgrid(torch.arange(k) - k // 2.0, torch.arange(k) - k // 2.0, indexing="ij")
    assert float((lum * xx).sum((-2, -1)).abs().max()) < 0.01
    assert float((lum * yy).sum((-2, -1)).abs().max()) < 0.01


def test_fourier_shift():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(2, 15, 21))  # odd sizes: no Nyquist bin (the extraction windows are odd)
    np.testing.assert_allclose(fourier_shift(a, 3, -2), np.roll(a, (-2, 3), axis=(-2, -1)), atol=1e-12)
    np.testing.assert_allclose(fourier_shift(fourier_shift(a, 0.3, 0.7), -0.3, -0.7), a, atol=1e-12)


def test_fit_homography():
    H = np.array([[31.0, 2.5, 12.0], [-1.5, 29.0, 20.0], [0.002, -0.001, 1.0]])
    idx = np.array([(c, r) for r in range(4) for c in range(5)], dtype=float)
    pts = (H @ np.c_[idx, np.ones(len(idx))].T)
    pts = (pts[:2] / pts[2]).T
    np.testing.assert_allclose(fit_homography(idx, pts), H, rtol=1e-8, atol=1e-8)
    row = np.array([(c, 0) for c in range(5)], dtype=float)  # one row of nodes: affine fallback
    fitted = fit_homography(row, row * 30 + 7)
    np.testing.assert_allclose((fitted @ np.c_[row, np.ones(5)].T)[:2].T, row * 30 + 7, atol=1e-9)


def test_mono_captures(tmp_path):
    truth = PSFSimulator("gaussian", grid_shape=(2, 2), psf_size=15, sensor_res=(80, 80), wavelengths_nm=[550.0],
                         H_img=np.array([[40.0, 0, 20], [0, 40.0, 20], [0, 0, 1]])).simulate()
    write_synthetic_captures(truth, tmp_path, background=0.05, noise_sigma=0.001)
    rec = psf_field_from_captures(tmp_path, psf_size=15)
    assert rec.psfs.shape == (1, 1, 4, 15, 15) and rec.channel_order == "L"
    assert psnr(rec.psfs, truth.psfs) > 45


def test_bad_captures(tmp_path, seidel_truth):
    with pytest.raises(DataError, match="image folder not found"):
        find_captures(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no capture images"):
        find_captures(tmp_path / "empty")
    good = tmp_path / "good"
    write_synthetic_captures(seidel_truth, good)
    (good / "psf_02_03.png").unlink()
    with pytest.raises(DataError, match=r"misses captures for node\(s\) \(2, 3\)"):
        find_captures(good)
    (good / "psf_02_03.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="cannot read image.*psf_02_03.png"):
        psf_field_from_captures(good, psf_size=21)
    (good / "psf_02_03.png").unlink()
    (good / "flat.png").write_bytes(b"")
    with pytest.raises(DataError, match="does not end with the node's row and column"):
        find_captures(good)
    noise = tmp_path / "noise"
    write_image(noise / "n_0_0.png", np.random.default_rng(0).uniform(0.4, 0.6, (40, 40, 3)).astype(np.float32))
    with pytest.raises(DataError, match="runs off|no point source"):
        psf_field_from_captures(noise, psf_size=33)
