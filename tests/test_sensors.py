"""Sensor models against closed forms: QIS photon statistics (binary mean 1 - exp(-lambda),
saturation, frame averaging), the RAW pipeline's exact inverses (Brooks et al. 2019), demosaicing."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from psf.sensors import (QISSensor, RawSensor, bayer_masks, demosaic_bilinear, gamma_compress, gamma_expand,
                         inverse_smoothstep, low_light, mosaic, qis_flux_estimate, random_ccm, smoothstep)
from utils.errors import ConfigError

N_PIX = 1000 * 1000


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("lam", [0.1, 0.7, 2.0])
def test_one_bit_qis_mean_is_one_minus_exp_minus_lambda(lam):
    """Acceptance: QE = 1, 10^6 pixels: |mean - (1 - e^-lambda)| < 3 sigma, sigma = sqrt(p(1-p)/n)."""
    x = torch.full((1, 1000, 1000), 1.0)
    out = QISSensor(photons_per_pixel=lam, quantum_efficiency=1.0, bits=1)(
        torch.full_like(x, 1.0), gen(1))  # sRGB 1 = linear 1
    p = 1 - math.exp(-lam)
    sigma = math.sqrt(p * (1 - p) / N_PIX)
    assert set(torch.unique(out).tolist()) <= {0.0, 1.0}
    assert abs(out.double().mean().item() - p) < 3 * sigma
    # QE and dark counts enter the rate: QE 0.5, dark 0.2 -> 1 - exp(-(0.5 lam + 0.2))
    out = QISSensor(photons_per_pixel=lam, quantum_efficiency=0.5, dark_counts=0.2).apply_linear(x, gen(2))
    p = 1 - math.exp(-(0.5 * lam + 0.2))
    assert abs(out.double().mean().item() - p) < 3 * math.sqrt(p * (1 - p) / N_PIX)
    # and the maximum-likelihood inverse recovers lambda
    est = qis_flux_estimate(out.double().mean(), 0.5, 0.2).item()
    assert est == pytest.approx(lam, rel=0.02)


def test_three_bit_qis_saturates_at_seven():
    x = torch.linspace(0, 1, 10000).reshape(1, 100, 100)
    s = QISSensor(photons_per_pixel=50.0, bits=3)
    counts = s.counts(x, gen(0))
    assert counts.max().item() == 7 and counts.min().item() == 0
    assert torch.equal(counts, counts.round())
    assert (counts[..., -10:, :] == 7).float().mean() > 0.99  # bright pixels all saturated
    assert s.apply_linear(x, gen(0)).max().item() == 1.0
    # below saturation the counts are Poisson: mean = variance = lambda
    c = QISSensor(photons_per_pixel=1.5, bits=3).counts(torch.ones(1, 1000, 1000), gen(3)).double()
    assert c.mean().item() == pytest.approx(1.5, abs=0.01) and c.var().item() == pytest.approx(1.5, rel=0.02)


@pytest.mark.parametrize("bits, frames", [(1, 4), (3, 8)])
def test_frame_averaging_divides_the_variance_by_t(bits, frames):
    x = torch.full((1, 1000, 1000), 0.8)
    one = QISSensor(photons_per_pixel=1.0, bits=bits, read_noise=0.3).apply_linear(x, gen(4)).double()
    avg = QISSensor(photons_per_pixel=1.0, bits=bits, read_noise=0.3, frames=frames).apply_linear(x, gen(5)).double()
    ratio = one.var().item() / avg.var().item()
    assert ratio == pytest.approx(frames, rel=0.03), ratio  # sampling error of a variance over 1e6 px: ~0.3 %
    assert avg.mean().item() == pytest.approx(one.mean().item(), rel=0.01)


def test_qis_is_seeded_and_checks_options():
    x = torch.rand(3, 16, 16, generator=gen(0))
    s = QISSensor(photons_per_pixel=3.0, bits=2, frames=2, mono=True)
    a, b = s(x, gen(7)), s(x, gen(7))
    assert torch.equal(a, b) and a.shape == (1, 16, 16)
    with pytest.raises(ConfigError):
        QISSensor(quantum_efficiency=1.5)
    with pytest.raises(ConfigError):
        QISSensor(bits=0)


def test_tone_and_gamma_inverses():
    y = torch.linspace(0, 1, 1001, dtype=torch.float64)
    assert torch.allclose(smoothstep(inverse_smoothstep(y)), y, atol=1e-12)
    assert torch.allclose(gamma_compress(gamma_expand(y[1:])), y[1:], atol=1e-12)
    assert smoothstep(torch.tensor(0.5, dtype=torch.float64)).item() == 0.5


def _image(h=64, w=64):
    from skimage import data

    img = torch.from_numpy(data.astronaut()[:h * 2, :w * 2].astype(np.float64) / 255).permute(2, 0, 1)
    return torch.nn.functional.avg_pool2d(img[None], 2)[0].contiguous()  # 2x2 area average


def test_unprocess_process_round_trip_without_noise():
    """Acceptance: sRGB -> RAW -> sRGB within 1e-3 without noise (three RAW channels, no clip:
    every step is inverted exactly; measured 2e-13 in float64)."""
    img = _image()
    cam = RawSensor.sample(gen(0), noise=False, bayer=False, clip=False)
    back = cam.process(cam.unprocess(img))
    assert (back - img).abs().max().item() < 1e-3
    # with the Bayer mosaic and bilinear demosaicing the loss is the demosaicing's alone:
    bay = RawSensor.sample(gen(0), noise=False, clip=False)
    raw = bay.unprocess(img)
    assert raw.shape == (1, 64, 64)
    full = RawSensor.sample(gen(0), noise=False, clip=False, bayer=False).unprocess(img)
    assert torch.allclose(mosaic(full), raw)  # the mosaic samples the 3-channel RAW
    out = bay.process(raw)
    psnr = -10 * math.log10(((out - img) ** 2).mean().item())
    assert psnr > 28, psnr  # measured 30.5 dB on this crop of the astronaut


def test_demosaic_keeps_samples_and_is_exact_on_smooth_colour():
    h = w = 16
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    rgb = torch.stack([0.2 + 0.01 * xx, 0.5 + 0.0 * yy, 0.3 + 0.01 * yy])
    raw = mosaic(rgb)
    out = demosaic_bilinear(raw)
    masks = bayer_masks(h, w)
    assert torch.allclose((out * masks).sum(0), raw[0])  # measured samples kept
    assert torch.allclose(out[:, 1:-1, 1:-1], rgb[:, 1:-1, 1:-1], atol=1e-12)  # linear ramps interpolated exactly


def test_ccm_rows_sum_to_one_and_grey_stays_grey():
    m = random_ccm(gen(3))
    assert torch.allclose(m.sum(-1), torch.ones(3, dtype=torch.float64))
    cam = RawSensor(rgb2cam=m.tolist(), red_gain=1, blue_gain=1, rgb_gain=1, bayer=False)
    grey = torch.full((3, 4, 4), 0.4, dtype=torch.float64)
    assert torch.allclose(cam.unprocess_linear(grey), grey)


def test_raw_noise_variance_and_seed():
    """y ~ N(x, read + shot x): measured variance of a flat RAW matches."""
    cam = RawSensor(shot_noise=0.01, read_noise=0.0004, clip=False, bayer=False)
    x = torch.full((1, 500, 500), 0.3, dtype=torch.float64)
    y = cam.add_noise(x, gen(0))
    assert y.var().item() == pytest.approx(0.0004 + 0.01 * 0.3, rel=0.02)
    img = _image(32, 32)
    noisy = RawSensor.sample(gen(1))
    assert torch.equal(noisy(img, gen(5)), noisy(img, gen(5)))
    assert noisy.shot_noise > 0 and noisy.read_noise > 0


def test_low_light_scales_linear_light():
    from utils.noise import srgb_to_linear

    img = _image(8, 8)
    dark = low_light(img, 0.1)
    assert torch.allclose(srgb_to_linear(dark), 0.1 * srgb_to_linear(img), atol=1e-9)


def test_sensors_plug_into_simulate_capture():
    """The renderer's capture model takes a sensor where it takes a noise model."""
    from psf.example_fields import elliptical_gaussian_field
    from utils.sv_renderer import SVRenderer, simulate_capture

    field = elliptical_gaussian_field(grid_shape=(3, 3), psf_size=9, sensor_res=(32, 32))
    renderer = SVRenderer(field, (32, 32))
    gt = _image(32, 32)[None].float()
    for sensor in (QISSensor(photons_per_pixel=4.0, bits=3, frames=2), RawSensor.sample(gen(0))):
        a = simulate_capture(gt, renderer, sensor, gen(9))
        b = simulate_capture(gt, renderer, sensor, gen(9))
        assert a.shape == gt.shape and torch.equal(a, b)
        assert 0 <= a.min() and a.max() <= 1


def test_raw_apply_linear_matches_the_noise_model_convention():
    """Without noise, mosaic and exposure, a linear render comes back as its sRGB image."""
    from utils.noise import NoiseModel, srgb_to_linear

    img = _image(16, 16)
    lin = srgb_to_linear(img)
    cam = RawSensor.sample(gen(2), noise=False, bayer=False, clip=False)
    assert torch.allclose(cam.apply_linear(lin), NoiseModel().apply_linear(lin), atol=1e-9)


def test_sample_sensor_low_light():
    from psf.sensors import sample_sensor

    q = sample_sensor("qis", gen(0), photons_per_pixel=(0.5, 4.0), bits=3, frames=2, read_noise=(0.1, 0.3))
    assert 0.5 <= q.photons_per_pixel <= 4.0 and q.bits == 3 and 0.1 <= q.read_noise <= 0.3
    same = [sample_sensor("qis", gen(0), photons_per_pixel=(0.5, 4.0)) for _ in range(2)]
    assert same[0] == same[1]  # seeded
    r = sample_sensor("raw", gen(1), exposure=(0.05, 0.2), digital_gain=True)
    assert 0.05 <= r.exposure <= 0.2 and r.digital_gain == pytest.approx(1 / r.exposure)
    img = _image(32, 32)
    dark = RawSensor(exposure=0.1)(img)  # noise-free, dark: ~10x less linear light
    assert dark.mean() < img.mean()
    with pytest.raises(ConfigError):
        sample_sensor("ccd", gen(0))
