"""PSNR and SSIM in the BasicSR convention: torch for batches, numpy twins for image files.

Convention (BasicSR ``basicsr/metrics/psnr_ssim.py``, commit 8d56e3a; SSIM: Wang et al.,
"Image quality assessment: from error visibility to structural similarity", IEEE TIP 13(4), 2004):

1. Inputs are RGB (or single-channel) images in [0, 1]. They are clamped to [0, 1] and scaled
   to 8-bit levels [0, 255]; with ``round_to_uint8=True`` the levels are rounded to integers
   (half to even), which is exactly what a saved 8-bit PNG holds, so scoring a network output
   with rounding equals scoring the PNG written from it. uint8 arrays are taken as levels.
2. ``crop_border`` pixels are removed from every edge of both images.
3. ``test_y_channel``: 3-channel images become BT.601 luma
   Y = 16 + 65.481 R + 128.553 G + 24.966 B (R, G, B in [0, 1]; Y in [16, 235]),
   computed in float64 and *not* rounded. Single-channel images are used as they are.
4. PSNR = 10 log10(255² / MSE), MSE over all pixels and channels of one image, in float64.
   Identical images give +inf.
5. SSIM (``mode="2d"``, the default): per channel, 11×11 Gaussian window with σ = 1.5,
   C1 = (0.01·255)², C2 = (0.03·255)², population (biased) local variances, only the 'valid'
   region (no padding), mean of the SSIM map, then mean over channels.
   ``mode="3d"`` is MATLAB's ``ssim()`` on an H×W×3 array and NAFNet's ``ssim3d``: one
   11×11×11 Gaussian (σ = 1.5) over (H, W, C) with replicate padding, mean of the full-size map
   (for single-channel input this is 2-D filtering with replicate padding).

Everything is float64; results are one value per image (torch: Tensor[B] on the input device).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from utils.metrics.common import (
    DATA_RANGE,
    SSIM_K1,
    SSIM_K2,
    SSIM_SIGMA,
    SSIM_WINDOW,
    Y_COEFFS,
    Y_OFFSET,
    MetricInputError,
    check_crop_border,
    check_cropped_size,
)

SSIM_MODES = ("2d", "3d")


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """Normalised 1-D Gaussian taps in float64 (the same values as cv2.getGaussianKernel)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def _check_mode(mode: str) -> None:
    if mode not in SSIM_MODES:
        raise MetricInputError(f"unknown SSIM mode {mode!r} (known: {', '.join(SSIM_MODES)})")


# ---------------------------------------------------------------------------------------------
# torch (batched B×C×H×W; used by training validation)
# ---------------------------------------------------------------------------------------------
def to_levels(x: torch.Tensor, round_to_uint8: bool = False) -> torch.Tensor:
    """[0, 1] image -> float64 8-bit levels in [0, 255] (clamped; rounded if asked)."""
    levels = x.detach().to(torch.float64).clamp(0.0, 1.0) * DATA_RANGE
    return torch.round(levels) if round_to_uint8 else levels


def rgb_to_y(levels: torch.Tensor) -> torch.Tensor:
    """B×3×H×W RGB levels in [0, 255] -> B×1×H×W BT.601 luma levels in [16, 235] (float64)."""
    r, g, b = (levels[:, i : i + 1].to(torch.float64) / DATA_RANGE for i in range(3))
    return Y_OFFSET + (r * Y_COEFFS[0] + g * Y_COEFFS[1] + b * Y_COEFFS[2])


def _prepare(pred, gt, crop_border, test_y_channel, round_to_uint8, min_size, what):
    if not isinstance(pred, torch.Tensor) or not isinstance(gt, torch.Tensor):
        raise MetricInputError(f"{what} expects torch tensors, got {type(pred).__name__} and {type(gt).__name__}")
    if pred.shape != gt.shape:
        raise MetricInputError(f"{what}: prediction and ground truth differ in shape: {tuple(pred.shape)} vs {tuple(gt.shape)}")
    if pred.ndim != 4 or pred.shape[1] not in (1, 3):
        raise MetricInputError(f"{what} expects B×C×H×W tensors with C = 1 or 3, got shape {tuple(pred.shape)}")
    check_crop_border(crop_border)
    check_cropped_size(pred.shape[2], pred.shape[3], crop_border, min_size, what)
    pred, gt = to_levels(pred, round_to_uint8), to_levels(gt, round_to_uint8)
    if crop_border:
        pred = pred[..., crop_border:-crop_border, crop_border:-crop_border]
        gt = gt[..., crop_border:-crop_border, crop_border:-crop_border]
    if test_y_channel and pred.shape[1] == 3:
        pred, gt = rgb_to_y(pred), rgb_to_y(gt)
    return pred, gt


def psnr(
    pred: torch.Tensor,
    gt: torch.Tensor,
    crop_border: int = 0,
    test_y_channel: bool = False,
    round_to_uint8: bool = False,
) -> torch.Tensor:
    """PSNR in dB per image, BasicSR convention (module docstring): B×C×H×W in [0, 1] -> Tensor[B] float64.

    Data range 255 on 8-bit levels (equivalently 1.0 on [0, 1] data); +inf for identical images.
    """
    p, g = _prepare(pred, gt, crop_border, test_y_channel, round_to_uint8, 1, "PSNR")
    mse = ((p - g) ** 2).mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(DATA_RANGE * DATA_RANGE / mse)


def l1(
    pred: torch.Tensor,
    gt: torch.Tensor,
    crop_border: int = 0,
    test_y_channel: bool = False,
    round_to_uint8: bool = False,
) -> torch.Tensor:
    """Mean absolute error per image on the [0, 1] scale: mean |pred − gt| of the 8-bit levels
    (steps 1-3 of the module docstring) over pixels and channels, divided by 255. Tensor[B] float64."""
    p, g = _prepare(pred, gt, crop_border, test_y_channel, round_to_uint8, 1, "L1")
    return (p - g).abs().mean(dim=(1, 2, 3)) / DATA_RANGE


def _correlate_valid(x: torch.Tensor, taps: list[float], dim: int) -> torch.Tensor:
    """'Valid' correlation of ``x`` with ``taps`` along ``dim`` as an in-place sum of shifted slices.

    Much faster than float64 conv2d on CPU, works on any device, fixed summation order.
    """
    n = x.shape[dim] - len(taps) + 1
    out = x.narrow(dim, 0, n) * taps[0]
    for i in range(1, len(taps)):
        out.add_(x.narrow(dim, i, n), alpha=taps[i])
    return out


def _filter_valid_2d(x: torch.Tensor, g: list[float]) -> torch.Tensor:
    """Separable Gaussian over the last two dims, 'valid' region only."""
    return _correlate_valid(_correlate_valid(x, g, -1), g, -2)


def _filter_replicate_3d(x: torch.Tensor, g: list[float]) -> torch.Tensor:
    """Separable Gaussian over (C, H, W) of B×1×C×H×W with replicate padding (same size out)."""
    x = F.pad(x, (len(g) // 2,) * 6, mode="replicate")
    for dim in (-1, -2, -3):
        x = _correlate_valid(x, g, dim)
    return x


def _ssim_map(mu1, mu2, e11, e22, e12):
    c1 = (SSIM_K1 * DATA_RANGE) ** 2
    c2 = (SSIM_K2 * DATA_RANGE) ** 2
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    sigma1_sq, sigma2_sq, sigma12 = e11 - mu1_sq, e22 - mu2_sq, e12 - mu12
    return ((2 * mu12 + c1) * (2 * sigma12 + c2)) / ((mu1_sq + mu2_sq + c1) * (sigma1_sq + sigma2_sq + c2))


def ssim(
    pred: torch.Tensor,
    gt: torch.Tensor,
    crop_border: int = 0,
    test_y_channel: bool = False,
    round_to_uint8: bool = False,
    mode: str = "2d",
) -> torch.Tensor:
    """SSIM per image, BasicSR convention (module docstring): B×C×H×W in [0, 1] -> Tensor[B] float64.

    ``mode="2d"``: per-channel 11×11 Gaussian (σ 1.5), 'valid' region, mean over channels (BasicSR,
    MMagic). ``mode="3d"``: MATLAB ``ssim()`` / NAFNet ``ssim3d`` (3-D Gaussian, replicate padding).
    """
    _check_mode(mode)
    p, g = _prepare(pred, gt, crop_border, test_y_channel, round_to_uint8, SSIM_WINDOW if mode == "2d" else 1, "SSIM")
    win = gaussian_window().tolist()
    if mode == "2d":
        stats = [_filter_valid_2d(t, win) for t in (p, g, p * p, g * g, p * g)]
        return _ssim_map(*stats).mean(dim=(2, 3)).mean(dim=1)
    p, g = p.unsqueeze(1), g.unsqueeze(1)
    stats = [_filter_replicate_3d(t, win) for t in (p, g, p * p, g * g, p * g)]
    return _ssim_map(*stats).mean(dim=(1, 2, 3, 4))


# ---------------------------------------------------------------------------------------------
# numpy twins (one H×W×C or H×W image; used for image files)
# ---------------------------------------------------------------------------------------------
def to_levels_np(img: np.ndarray, round_to_uint8: bool = False) -> np.ndarray:
    """Image -> float64 8-bit levels: uint8 as is, uint16 / 65535, float in [0, 1] (clamped)."""
    img = np.asarray(img)
    if img.dtype == np.uint8:
        return img.astype(np.float64)
    if img.dtype == np.uint16:
        levels = img.astype(np.float64) / 65535.0 * DATA_RANGE
    elif np.issubdtype(img.dtype, np.floating):
        levels = np.clip(img.astype(np.float64), 0.0, 1.0) * DATA_RANGE
    else:
        raise MetricInputError(f"unsupported pixel type {img.dtype} (use uint8, uint16 or float in [0, 1])")
    return np.round(levels) if round_to_uint8 else levels


def rgb_to_y_np(levels: np.ndarray) -> np.ndarray:
    """H×W×3 RGB levels in [0, 255] -> H×W×1 BT.601 luma levels (float64, not rounded)."""
    r, g, b = (levels[..., i : i + 1].astype(np.float64) / DATA_RANGE for i in range(3))
    return Y_OFFSET + (r * Y_COEFFS[0] + g * Y_COEFFS[1] + b * Y_COEFFS[2])


def _prepare_np(pred, gt, crop_border, test_y_channel, round_to_uint8, min_size, what):
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise MetricInputError(f"{what}: prediction and ground truth differ in shape: {pred.shape} vs {gt.shape}")
    if pred.ndim == 2:
        pred, gt = pred[..., None], gt[..., None]
    if pred.ndim != 3 or pred.shape[2] not in (1, 3):
        raise MetricInputError(f"{what} expects H×W×C arrays with C = 1 or 3, got shape {pred.shape}")
    check_crop_border(crop_border)
    check_cropped_size(pred.shape[0], pred.shape[1], crop_border, min_size, what)
    pred, gt = to_levels_np(pred, round_to_uint8), to_levels_np(gt, round_to_uint8)
    if crop_border:
        pred = pred[crop_border:-crop_border, crop_border:-crop_border]
        gt = gt[crop_border:-crop_border, crop_border:-crop_border]
    if test_y_channel and pred.shape[2] == 3:
        pred, gt = rgb_to_y_np(pred), rgb_to_y_np(gt)
    return pred, gt


def psnr_np(
    pred: np.ndarray,
    gt: np.ndarray,
    crop_border: int = 0,
    test_y_channel: bool = False,
    round_to_uint8: bool = False,
) -> float:
    """PSNR in dB of one H×W×C (RGB) or H×W image; numpy twin of :func:`psnr` (same convention)."""
    p, g = _prepare_np(pred, gt, crop_border, test_y_channel, round_to_uint8, 1, "PSNR")
    mse = float(np.mean((p - g) ** 2))
    if mse == 0.0:
        return math.inf
    return float(10.0 * np.log10(DATA_RANGE * DATA_RANGE / mse))


def l1_np(
    pred: np.ndarray,
    gt: np.ndarray,
    crop_border: int = 0,
    test_y_channel: bool = False,
    round_to_uint8: bool = False,
) -> float:
    """Mean absolute error on the [0, 1] scale of one H×W×C or H×W image; numpy twin of :func:`l1`."""
    p, g = _prepare_np(pred, gt, crop_border, test_y_channel, round_to_uint8, 1, "L1")
    return float(np.mean(np.abs(p - g)) / DATA_RANGE)


def _ssim_channel_np(p: np.ndarray, g: np.ndarray, mode: str) -> np.ndarray:
    """SSIM map of 2-D (mode 2d) or 3-D (mode 3d) float64 arrays."""
    from scipy.ndimage import correlate1d

    win = gaussian_window()
    r = win.size // 2

    def blur(x):
        for axis in range(x.ndim):
            # 'nearest' = replicate padding; for 2d only the valid interior is kept, so the mode is moot.
            x = correlate1d(x, win, axis=axis, mode="nearest")
        return x if mode == "3d" else x[r:-r, r:-r]

    return _ssim_map(blur(p), blur(g), blur(p * p), blur(g * g), blur(p * g))


def ssim_np(
    pred: np.ndarray,
    gt: np.ndarray,
    crop_border: int = 0,
    test_y_channel: bool = False,
    round_to_uint8: bool = False,
    mode: str = "2d",
) -> float:
    """SSIM of one H×W×C (RGB) or H×W image; numpy twin of :func:`ssim` (same convention)."""
    _check_mode(mode)
    p, g = _prepare_np(pred, gt, crop_border, test_y_channel, round_to_uint8, SSIM_WINDOW if mode == "2d" else 1, "SSIM")
    if mode == "3d":
        return float(_ssim_channel_np(p, g, "3d").mean())
    return float(np.mean([_ssim_channel_np(p[..., c], g[..., c], "2d").mean() for c in range(p.shape[2])]))
