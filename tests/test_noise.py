"""Noise models against their closed forms; sRGB curve against scikit-image; seeding."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import color
from skimage.color.colorconv import xyz_from_rgb

from utils.noise import (
    NoiseModel,
    gaussian_noise,
    linear_to_srgb,
    poisson_gaussian_noise,
    sample_noise_model,
    srgb_to_linear,
)

N = 400_000  # samples per statistic: relative std error of a variance ~ sqrt(2/N) = 0.22%


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_srgb_curve_matches_iec_and_skimage():
    # Closed-form values of IEC 61966-2-1.
    assert srgb_to_linear(torch.tensor(0.5, dtype=torch.float64)).item() == pytest.approx(((0.5 + 0.055) / 1.055) ** 2.4)
    assert srgb_to_linear(torch.tensor(0.02, dtype=torch.float64)).item() == pytest.approx(0.02 / 12.92)
    assert linear_to_srgb(torch.tensor(0.18, dtype=torch.float64)).item() == pytest.approx(1.055 * 0.18 ** (1 / 2.4) - 0.055)
    # scikit-image's rgb2xyz / xyz2rgb linearise with the same curve (third-party check).
    rgb = np.random.default_rng(0).random((16, 16, 3))
    m = xyz_from_rgb
    np.testing.assert_allclose(color.rgb2xyz(rgb), srgb_to_linear(torch.from_numpy(rgb)).numpy() @ m.T, atol=1e-12)
    xyz = color.rgb2xyz(rgb)
    lin = xyz @ np.linalg.inv(m).T
    np.testing.assert_allclose(color.xyz2rgb(xyz), np.clip(linear_to_srgb(torch.from_numpy(lin)).numpy(), 0, 1), atol=1e-9)
    # Round trip, continuity at the knee, monotone, negatives kept.
    x = torch.linspace(-0.1, 1.1, 10001, dtype=torch.float64)
    assert torch.allclose(linear_to_srgb(srgb_to_linear(x)), x, atol=1e-12)
    assert torch.all(torch.diff(srgb_to_linear(x)) > 0)
    assert srgb_to_linear(torch.tensor(-0.1)).item() == pytest.approx(-0.1 / 12.92)


def test_gaussian_noise_statistics():
    x = torch.full((N,), 0.3, dtype=torch.float64)
    y = gaussian_noise(x, 0.05, gen())
    assert y.mean().item() == pytest.approx(0.3, abs=4 * 0.05 / N ** 0.5)
    assert y.var().item() == pytest.approx(0.05 ** 2, rel=0.02)
    assert torch.equal(gaussian_noise(x, 0.0, gen()), x)


@pytest.mark.parametrize("signal", [0.02, 0.2, 0.8])
def test_poisson_gaussian_variance_vs_signal(signal):
    photons, read = 150.0, 4.0
    lin = torch.full((N,), signal, dtype=torch.float64)
    y = poisson_gaussian_noise(lin, photons, read, gen(1))
    expected_var = signal / photons + (read / photons) ** 2  # Foi et al. 2008, eq. 1
    assert y.mean().item() == pytest.approx(signal, abs=4 * (expected_var / N) ** 0.5)
    assert y.var().item() == pytest.approx(expected_var, rel=0.02)


def test_shot_noise_is_poisson_not_gaussian():
    """Third central moment of Poisson(λ)/photons is λ/photons³ = L/photons² (a Gaussian has 0)."""
    photons, signal = 100.0, 0.5
    y = poisson_gaussian_noise(torch.full((N,), signal, dtype=torch.float64), photons, 0.0, gen(2))
    third = (y - y.mean()).pow(3).mean().item()
    assert third == pytest.approx(signal / photons ** 2, rel=0.15)
    # Integer electron counts.
    electrons = y * photons
    assert torch.allclose(electrons, electrons.round(), atol=1e-9)


def test_noise_model_in_srgb_is_shot_noise_in_linear_light():
    photons, read = 300.0, 2.0
    model = NoiseModel("poisson_gaussian", photons=photons, read_noise=read)
    for srgb in (0.2, 0.7):
        x = torch.full((N,), srgb, dtype=torch.float64)
        lin = srgb_to_linear(model(x, gen(3)))
        signal = srgb_to_linear(torch.tensor(srgb, dtype=torch.float64)).item()
        assert lin.var().item() == pytest.approx(signal / photons + (read / photons) ** 2, rel=0.02)
        # apply_linear gives the same sRGB image from the linear input, same draws.
        assert torch.allclose(model.apply_linear(srgb_to_linear(x), gen(3)), model(x, gen(3)), atol=1e-12)
    # Gaussian noise is added to the sRGB values.
    g = NoiseModel("gaussian", sigma=0.02)
    x = torch.full((N,), 0.05, dtype=torch.float64)
    assert g.apply_linear(srgb_to_linear(x), gen(4)).var().item() == pytest.approx(0.02 ** 2, rel=0.02)
    assert torch.equal(NoiseModel()(x), x)


def test_seeding_is_per_sample_and_independent_of_global_rng():
    x = torch.rand(3, 16, 16)
    model = NoiseModel("poisson_gaussian", photons=500, read_noise=3)
    a = model(x, gen(7))
    torch.manual_seed(123)
    torch.rand(10)
    assert torch.equal(model(x, gen(7)), a)
    assert not torch.equal(model(x, gen(8)), a)
    assert torch.equal(NoiseModel("gaussian", sigma=0.1)(x, gen(7)), NoiseModel("gaussian", sigma=0.1)(x, gen(7)))


def test_gradient_passes_through_noise():
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    NoiseModel("poisson_gaussian", photons=100)(x, gen()).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and (x.grad > 0).all()


def test_sample_noise_model_ranges():
    draws = [sample_noise_model("poisson_gaussian", photons=(10, 1000), read_noise=(1, 3), generator=gen(s)) for s in range(400)]
    photons = np.array([d.photons for d in draws])
    assert photons.min() >= 10 and photons.max() <= 1000
    assert np.median(np.log10(photons)) == pytest.approx(2.0, abs=0.15)  # log-uniform: median at the geometric mean
    assert all(1 <= d.read_noise <= 3 for d in draws)
    assert sample_noise_model("gaussian", sigma=(0.01, 0.05), generator=gen(1)) == sample_noise_model("gaussian", sigma=(0.01, 0.05), generator=gen(1))
    assert sample_noise_model("gaussian", sigma=0.03).sigma == 0.03
    with pytest.raises(ValueError, match="needs photons > 0"):
        NoiseModel("poisson_gaussian")
    with pytest.raises(ValueError, match="noise kind must be one of"):
        NoiseModel("speckle")
