"""PSNR / SSIM: BasicSR reference values, torch == numpy, closed forms and independent code."""
from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
import torch

from utils.errors import RegistryError
from utils.image_io import image_to_tensor, read_image, write_image
from utils.metrics import (
    METRICS,
    MetricInputError,
    compute_metrics,
    get_metric,
    higher_is_better,
    psnr,
    psnr_np,
    rgb_to_y,
    rgb_to_y_np,
    ssim,
    ssim_np,
)
from utils.metrics.psnr_ssim import gaussian_window

CASES = [(y, cb) for y in (False, True) for cb in (0, 4)]


def _key(test_y_channel: bool, crop_border: int) -> str:
    return f"{'y' if test_y_channel else 'rgb'}_crop{crop_border}"


@pytest.fixture(scope="module")
def tid_pairs(fixtures_dir):
    """(name, dist RGB float, ref RGB float, reference values) for the TID2013 fixture pairs."""
    folder = fixtures_dir / "metrics"
    ref = json.loads((folder / "basicsr_reference.json").read_text())
    pairs = []
    for name, values in ref["values"].items():
        for sub, key in (("ref", "ref_sha256"), ("dist", "dist_sha256")):
            digest = hashlib.sha256((folder / sub / name).read_bytes()).hexdigest()
            assert digest == values[key], f"fixture {sub}/{name} changed"
        pairs.append((name, read_image(folder / "dist" / name), read_image(folder / "ref" / name), values))
    assert len(pairs) == 3
    return pairs


@pytest.mark.parametrize("test_y_channel,crop_border", CASES)
def test_basicsr_reference_numpy(tid_pairs, test_y_channel, crop_border):
    key = _key(test_y_channel, crop_border)
    for name, dist, ref, values in tid_pairs:
        p = psnr_np(dist, ref, crop_border, test_y_channel, round_to_uint8=True)
        s = ssim_np(dist, ref, crop_border, test_y_channel, round_to_uint8=True)
        assert abs(p - values[f"psnr_{key}"]) < 1e-4, (name, key, p)
        assert abs(s - values[f"ssim_{key}"]) < 1e-6, (name, key, s)


@pytest.mark.parametrize("test_y_channel,crop_border", CASES)
def test_basicsr_reference_torch_batched(tid_pairs, test_y_channel, crop_border):
    key = _key(test_y_channel, crop_border)
    dist = torch.stack([image_to_tensor(d) for _, d, _, _ in tid_pairs])
    ref = torch.stack([image_to_tensor(r) for _, _, r, _ in tid_pairs])
    p = psnr(dist, ref, crop_border, test_y_channel, round_to_uint8=True)
    s = ssim(dist, ref, crop_border, test_y_channel, round_to_uint8=True)
    assert p.shape == s.shape == (3,) and p.dtype == torch.float64
    want_p = torch.tensor([v[f"psnr_{key}"] for *_, v in tid_pairs], dtype=torch.float64)
    want_s = torch.tensor([v[f"ssim_{key}"] for *_, v in tid_pairs], dtype=torch.float64)
    torch.testing.assert_close(p, want_p, atol=1e-4, rtol=0)
    torch.testing.assert_close(s, want_s, atol=1e-6, rtol=0)


def test_uint8_arrays_are_levels(tid_pairs):
    name, dist, ref, values = tid_pairs[0]
    d8 = np.round(dist * 255).astype(np.uint8)
    r8 = np.round(ref * 255).astype(np.uint8)
    assert psnr_np(d8, r8) == pytest.approx(values["psnr_rgb_crop0"], abs=1e-10)
    assert ssim_np(d8, r8, test_y_channel=True) == pytest.approx(values["ssim_y_crop0"], abs=1e-6)


def _random_pair(shape, seed):
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(shape, generator=g)
    pred = (gt + 0.08 * torch.randn(shape, generator=g)).clamp(-0.05, 1.05)  # some values outside [0, 1]
    return pred, gt


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("round_to_uint8", [False, True])
@pytest.mark.parametrize("mode", ["2d", "3d"])
def test_torch_equals_numpy(channels, round_to_uint8, mode):
    pred, gt = _random_pair((2, channels, 29, 34), seed=channels + 10 * round_to_uint8)
    for test_y_channel, crop_border in CASES:
        kw = dict(crop_border=crop_border, test_y_channel=test_y_channel, round_to_uint8=round_to_uint8)
        pt = psnr(pred, gt, **kw)
        st = ssim(pred, gt, mode=mode, **kw)
        for i in range(2):
            a, b = pred[i].numpy().transpose(1, 2, 0), gt[i].numpy().transpose(1, 2, 0)
            assert pt[i].item() == pytest.approx(psnr_np(a, b, **kw), rel=1e-12)
            assert st[i].item() == pytest.approx(ssim_np(a, b, mode=mode, **kw), abs=1e-12)


def test_gaussian_window_matches_opencv():
    import cv2

    np.testing.assert_allclose(gaussian_window(), cv2.getGaussianKernel(11, 1.5)[:, 0], rtol=1e-12, atol=0)


def test_ssim_2d_matches_skimage():
    """scikit-image's own SSIM (Gaussian σ 1.5, population covariance, range 255) per channel."""
    from skimage.metrics import structural_similarity

    pred, gt = _random_pair((1, 3, 40, 52), seed=3)
    a = np.round(pred[0].clamp(0, 1).double().numpy().transpose(1, 2, 0) * 255)
    b = np.round(gt[0].double().numpy().transpose(1, 2, 0) * 255)
    want = np.mean([
        structural_similarity(a[..., c], b[..., c], gaussian_weights=True, sigma=1.5,
                              use_sample_covariance=False, data_range=255)
        for c in range(3)
    ])
    assert ssim(pred, gt, round_to_uint8=True).item() == pytest.approx(want, abs=1e-12)


def test_ssim_3d_matches_brute_force_convolution():
    """3-D SSIM against a full 11×11×11 kernel convolution with replicate ('nearest') borders."""
    from scipy.ndimage import correlate

    pred, gt = _random_pair((1, 3, 21, 18), seed=5)
    p = pred[0].clamp(0, 1).double().numpy().transpose(1, 2, 0) * 255
    g = gt[0].double().numpy().transpose(1, 2, 0) * 255
    w = gaussian_window()
    kernel = w[:, None, None] * w[None, :, None] * w[None, None, :]

    def blur(x):
        return correlate(x, kernel, mode="nearest")

    mu1, mu2 = blur(p), blur(g)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s1, s2, s12 = blur(p * p) - mu1**2, blur(g * g) - mu2**2, blur(p * g) - mu1 * mu2
    want = np.mean(((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s1 + s2 + c2)))
    assert ssim(pred, gt, mode="3d").item() == pytest.approx(want, abs=1e-12)
    assert ssim_np(pred[0].numpy().transpose(1, 2, 0), gt[0].numpy().transpose(1, 2, 0), mode="3d") == pytest.approx(want, abs=1e-12)


def test_psnr_data_range_is_one_for_unit_images():
    """A uniform error of 0.1 on [0, 1] data is exactly 20 dB. Range 2.0 would give 26.02 dB,
    range 255/2 on [0, 1] data even more: this catches the old codebase's inflation."""
    gt = torch.full((1, 3, 16, 16), 0.4)
    pred = gt + 0.1
    assert psnr(pred, gt).item() == pytest.approx(20.0, abs=1e-6)
    assert psnr_np(pred[0].numpy().transpose(1, 2, 0), gt[0].numpy().transpose(1, 2, 0)) == pytest.approx(20.0, abs=1e-6)
    # one 8-bit level everywhere: 20·log10(255)
    a = np.full((8, 8, 3), 100, np.uint8)
    assert psnr_np(a + 1, a) == pytest.approx(20 * math.log10(255), abs=1e-12)


def test_psnr_gaussian_noise_matches_sigma():
    """Noise of std σ on [0, 1] data gives PSNR ≈ -20·log10(σ) (data range 1)."""
    g = torch.Generator().manual_seed(0)
    gt = torch.full((1, 3, 256, 256), 0.5)
    pred = gt + 0.05 * torch.randn(gt.shape, generator=g)
    assert psnr(pred, gt).item() == pytest.approx(-20 * math.log10(0.05), abs=0.05)


def test_identical_images_give_inf_psnr_and_unit_ssim():
    x = torch.rand(2, 3, 20, 20, generator=torch.Generator().manual_seed(1))
    assert torch.isinf(psnr(x, x)).all()
    assert math.isinf(psnr_np(x[0].numpy().transpose(1, 2, 0), x[0].numpy().transpose(1, 2, 0)))
    torch.testing.assert_close(ssim(x, x), torch.ones(2, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(ssim(x, x, mode="3d"), torch.ones(2, dtype=torch.float64), atol=1e-12, rtol=0)
    out = compute_metrics(x, x)
    assert torch.isinf(out["psnr"]).all() and torch.allclose(out["ssim"], torch.ones(2, dtype=torch.float64))


def test_y_channel_closed_form_and_channel_order():
    """BT.601: black -> 16, white -> 235, pure red -> 16 + 65.481, pure blue -> 16 + 24.966."""
    img = torch.zeros(1, 3, 1, 4, dtype=torch.float64)
    img[0, :, 0, 1] = 1.0
    img[0, 0, 0, 2] = 1.0  # red
    img[0, 2, 0, 3] = 1.0  # blue
    y = rgb_to_y(img * 255)[0, 0, 0]
    torch.testing.assert_close(y, torch.tensor([16.0, 235.0, 81.481, 40.966], dtype=torch.float64))
    np.testing.assert_allclose(rgb_to_y_np(img[0].numpy().transpose(1, 2, 0) * 255)[0, :, 0], y.numpy(), rtol=0, atol=1e-12)


def test_out_of_range_values_are_clamped():
    gt = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    over = gt.clone()
    over[..., :4, :4] = 3.0
    clipped = over.clamp(0, 1)
    assert psnr(over, gt).item() == psnr(clipped, gt).item()
    assert ssim(over, gt).item() == ssim(clipped, gt).item()


def test_rounded_torch_path_equals_saved_png(tmp_path):
    """What validation reports (torch, round_to_uint8) equals the score of the written PNG."""
    pred, gt = _random_pair((2, 3, 37, 41), seed=7)
    for test_y_channel, crop_border in CASES:
        got = compute_metrics(pred, gt, ("psnr", "ssim"), crop_border, test_y_channel, round_to_uint8=True)
        for i in range(2):
            write_image(tmp_path / "p.png", pred[i])
            write_image(tmp_path / "g.png", gt[i])
            p, g = read_image(tmp_path / "p.png"), read_image(tmp_path / "g.png")
            want = psnr_np(p, g, crop_border, test_y_channel, round_to_uint8=True)
            if test_y_channel:  # non-integer luma: equal up to summation order
                assert got["psnr"][i].item() == pytest.approx(want, rel=1e-13)
            else:  # integer levels: the squared errors sum exactly, so the values are identical
                assert got["psnr"][i].item() == want
            assert got["ssim"][i].item() == pytest.approx(ssim_np(p, g, crop_border, test_y_channel, round_to_uint8=True), abs=1e-12)


def test_rounding_changes_unrounded_scores():
    pred, gt = _random_pair((1, 3, 24, 24), seed=9)
    assert psnr(pred, gt, round_to_uint8=True).item() != psnr(pred, gt, round_to_uint8=False).item()


def test_bad_inputs_raise_clear_errors():
    a = torch.rand(1, 3, 20, 20)
    with pytest.raises(MetricInputError, match="differ in shape"):
        psnr(a, torch.rand(1, 3, 20, 21))
    with pytest.raises(MetricInputError, match="after crop_border=5"):
        ssim(a, a, crop_border=5)
    with pytest.raises(MetricInputError, match="crop_border"):
        psnr(a, a, crop_border=-1)
    with pytest.raises(MetricInputError, match="B×C×H×W"):
        psnr(a[0], a[0])
    with pytest.raises(MetricInputError, match="differ in shape"):
        ssim_np(np.zeros((20, 20, 3)), np.zeros((20, 20)))
    with pytest.raises(MetricInputError, match="mode"):
        ssim(a, a, mode="4d")


def test_registry_names_and_directions():
    assert higher_is_better("psnr") and higher_is_better("ssim") and higher_is_better("ssim_3d")
    assert not higher_is_better("lpips") and not higher_is_better("lpips_vgg")
    assert not higher_is_better("fid") and not higher_is_better("kid")
    assert get_metric("PSNR").name == "psnr" and get_metric("lpips-vgg").name == "lpips_vgg"
    assert all(spec.convention for spec in METRICS.values())
    with pytest.raises(RegistryError, match="did you mean 'ssim'"):
        get_metric("sssim")
    with pytest.raises(MetricInputError, match="whole image sets"):
        compute_metrics(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16), names=("psnr", "fid"))


def test_compute_metrics_keeps_batch_and_device():
    pred, gt = _random_pair((3, 3, 24, 24), seed=11)
    out = compute_metrics(pred, gt, names="psnr,ssim,ssim_3d")
    assert list(out) == ["psnr", "ssim", "ssim_3d"]
    for v in out.values():
        assert v.shape == (3,) and v.dtype == torch.float64 and v.device == pred.device
    torch.testing.assert_close(out["psnr"], psnr(pred, gt, round_to_uint8=True), rtol=0, atol=0)
