"""The Haar transform (models/archs/haar.py) against PyWavelets and the official module's outputs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.archs.haar import (
    HaarWaveletTransform2D,
    InverseHaarWaveletTransform2D,
    haar2d,
    ihaar2d,
)

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "vae_inpaint" / "haar_official.safetensors"


def test_equals_pywavelets_dwt2_band_major():
    pywt = pytest.importorskip("pywt")
    x = torch.rand(2, 3, 16, 24, generator=torch.Generator().manual_seed(0))
    y = haar2d(x).double().numpy()
    c = 3
    for b in range(2):
        for ch in range(c):
            cA, (cH, cV, cD) = pywt.dwt2(x[b, ch].double().numpy(), "haar")
            for band, ref in enumerate((cA, cH, cV, cD)):
                np.testing.assert_allclose(y[b, band * c + ch], ref, atol=1e-6, rtol=0)


def test_two_levels_follow_pywavelets_wavedec2_approximation():
    pywt = pytest.importorskip("pywt")
    x = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    level2 = haar2d(haar2d(x)[:, :1])
    ref = pywt.wavedec2(x[0, 0].double().numpy(), "haar", level=2)
    np.testing.assert_allclose(level2[0, 0].double().numpy(), ref[0], atol=1e-6, rtol=0)
    for band, r in enumerate(ref[1]):
        np.testing.assert_allclose(level2[0, band + 1].double().numpy(), r, atol=1e-6, rtol=0)


def test_round_trip_and_energy():
    x = torch.randn(2, 5, 8, 12, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    c = haar2d(x)
    assert torch.allclose(ihaar2d(c), x, atol=1e-13, rtol=0)
    assert torch.allclose(c.square().sum(), x.square().sum(), rtol=1e-12)  # orthonormal
    x32 = x.float()
    assert (ihaar2d(haar2d(x32)) - x32).abs().max() < 1e-6


def test_matches_official_module_outputs():
    from safetensors.torch import load_file

    if not FIXTURE.is_file():
        pytest.skip("fixture missing")
    f = load_file(str(FIXTURE))
    fwd, inv = HaarWaveletTransform2D(), InverseHaarWaveletTransform2D()
    for name in ("aa", "ad", "da", "dd"):
        assert torch.equal(getattr(fwd, name), f[f"kernel_{name}"])
    assert (fwd(f["x"]) - f["forward"]).abs().max() <= 1e-6
    assert (inv(f["forward"]) - f["inverse_of_forward"]).abs().max() <= 1e-6
    assert (inv(f["coeffs_random"]) - f["inverse_of_coeffs_random"]).abs().max() <= 1e-6
    assert set(fwd.state_dict()) == {"aa", "ad", "da", "dd"}  # the official buffer names


def test_odd_size_is_refused():
    with pytest.raises(ValueError, match="even"):
        haar2d(torch.zeros(1, 1, 5, 4))
