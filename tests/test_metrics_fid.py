"""FID / KID: the math against scipy and closed forms on real features; the Inception network."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn as nn

import utils.metrics.fid as fid_mod
from utils.errors import DataError
from utils.metrics import MetricInputError
from utils.metrics.fid import (
    FID_WEIGHTS_URL,
    FIDInceptionV3,
    feature_statistics,
    fid_from_features,
    frechet_distance,
    kid_from_features,
    load_fid_inception,
    polynomial_mmd2_unbiased,
)


@pytest.fixture(scope="module")
def small_net_features():
    """Features of a small random conv net on patches of two built-in images (two distributions)."""
    from skimage import data

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 12, 3, stride=2), nn.Tanh(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    ).eval()

    def patches(img, n, seed):
        rng = np.random.default_rng(seed)
        img = img.astype(np.float32) / 255
        ys = rng.integers(0, img.shape[0] - 24, n)
        xs = rng.integers(0, img.shape[1] - 24, n)
        return torch.stack([torch.from_numpy(img[y:y + 24, x:x + 24].transpose(2, 0, 1).copy()) for y, x in zip(ys, xs)])

    with torch.no_grad():
        a = net(patches(data.astronaut(), 220, 1)).double()
        b = net(patches(data.coffee(), 180, 2)).double()
        a2 = net(patches(data.astronaut(), 200, 3)).double()
    return a, b, a2


def _scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    """pytorch-fid's formula: sqrtm of Σ₁Σ₂ with scipy."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_statistics_match_numpy(small_net_features):
    a = small_net_features[0]
    mu, sigma = feature_statistics(a)
    np.testing.assert_allclose(mu.numpy(), a.numpy().mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma.numpy(), np.cov(a.numpy(), rowvar=False), rtol=1e-10, atol=1e-14)


def test_fid_matches_scipy_sqrtm(small_net_features):
    a, b, a2 = small_net_features
    for x, y in ((a, b), (a, a2), (b, a2)):
        assert fid_from_features(x, y) == pytest.approx(_scipy_fid(x.numpy(), y.numpy()), rel=1e-8)
    assert fid_from_features(a, a2) < fid_from_features(a, b)  # same image closer than another image


def test_frechet_closed_forms():
    # identical statistics
    rng = np.random.default_rng(0)
    m = rng.standard_normal((6, 6))
    s = m @ m.T
    mu = rng.standard_normal(6)
    assert frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-9)
    # diagonal covariances: Σ (√a − √b)² + ‖Δμ‖²
    a, b = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    mu2 = mu + rng.standard_normal(6)
    want = ((np.sqrt(a) - np.sqrt(b)) ** 2).sum() + ((mu - mu2) ** 2).sum()
    assert frechet_distance(mu, np.diag(a), mu2, np.diag(b)) == pytest.approx(want, rel=1e-12)
    # 1-D Gaussians: (m1 − m2)² + (s1 − s2)²
    assert frechet_distance([1.0], [[4.0]], [-0.5], [[0.25]]) == pytest.approx(1.5**2 + 1.5**2, rel=1e-12)


def _brute_force_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    m, d = x.shape

    def k(u, v):
        return (u @ v / d + 1) ** 3

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_matches_brute_force(small_net_features):
    a, b, _ = small_net_features
    x, y = a[:30], b[:30]
    want = _brute_force_mmd2(x.numpy(), y.numpy())
    assert polynomial_mmd2_unbiased(x, y) == pytest.approx(want, rel=1e-10)
    # one subset holding every sample = the full-sample estimate (MMD² ignores the order)
    mean, std = kid_from_features(x, y, n_subsets=1, subset_size=1000)
    assert mean == pytest.approx(want, rel=1e-10) and std == 0.0
    # the unbiased estimate is centred on 0 for one distribution, clearly positive for two
    same, _ = kid_from_features(a[:110], a[110:], n_subsets=20, subset_size=100)
    diff, _ = kid_from_features(a, b, n_subsets=20, subset_size=100)
    assert abs(same) < diff / 10


def test_bad_features_are_rejected():
    with pytest.raises(MetricInputError, match="N >= 2"):
        feature_statistics(torch.zeros(1, 4))
    with pytest.raises(MetricInputError, match="mismatched"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_inception_layout_and_features():
    model = FIDInceptionV3()
    # torchvision's inception_v3 has 27,161,264 parameters; minus the auxiliary classifier
    # (3,326,696) plus 8 more logits (1008 classes: 16,392) gives the FID network.
    assert sum(p.numel() for p in model.parameters()) == 27_161_264 - 3_326_696 + 16_392
    keys = model.state_dict().keys()
    assert {"Conv2d_1a_3x3.conv.weight", "Mixed_7c.branch_pool.bn.running_var", "fc.weight"} <= set(keys)
    with torch.no_grad():
        feats = model(torch.rand(2, 3, 48, 64, generator=torch.Generator().manual_seed(0)))
    assert feats.shape == (2, 2048) and torch.isfinite(feats).all() and (feats >= 0).all()


def test_weights_are_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.setattr(fid_mod.torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(DataError) as exc:
        load_fid_inception()
    assert "\n" not in str(exc.value) and FID_WEIGHTS_URL in str(exc.value)


def test_weights_load_from_hub_cache_and_reject_other_files(tmp_path, monkeypatch):
    monkeypatch.setattr(fid_mod.torch.hub, "get_dir", lambda: str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    source = FIDInceptionV3()
    with torch.no_grad():
        source.Mixed_7c.branch_pool.bn.running_mean.fill_(0.25)
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "checkpoints" / fid_mod.FID_WEIGHTS_FILE)
    loaded = load_fid_inception()
    assert torch.equal(loaded.Mixed_7c.branch_pool.bn.running_mean, torch.full((192,), 0.25))
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(DataError, match="not pytorch-fid's FID Inception"):
        load_fid_inception(tmp_path / "other.pth")


def test_resize_matches_pytorch_fid_batch_resize():
    img = torch.rand(3, 40, 52, generator=torch.Generator().manual_seed(4))
    want = torch.nn.functional.interpolate(img[None], size=(299, 299), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(fid_mod.resize_for_inception(img), want, rtol=0, atol=0)
    # resizing an already 299×299 image again is the identity (the network resizes once more)
    again = torch.nn.functional.interpolate(want[None], size=(299, 299), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(again, want, rtol=0, atol=0)
