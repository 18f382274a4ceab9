"""Shared constants and input checks for the metrics package."""
from __future__ import annotations

from utils.errors import DataError

# Every pixel metric works on 8-bit levels: [0, 1] inputs are scaled by this (BasicSR convention).
DATA_RANGE = 255.0

# ITU-R BT.601 "studio swing" luma for R, G, B in [0, 1]: Y = 16 + 65.481 R + 128.553 G + 24.966 B
# (range [16, 235]); the coefficients of MATLAB rgb2ycbcr and BasicSR bgr2ycbcr.
Y_OFFSET = 16.0
Y_COEFFS = (65.481, 128.553, 24.966)

# SSIM window and constants (Wang et al., IEEE TIP 13(4), 2004, Sec. III-C and eq. 13).
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


class MetricInputError(DataError, ValueError):
    """Images that cannot be scored as asked (shape mismatch, too small, bad option)."""


def check_crop_border(crop_border: int) -> int:
    if isinstance(crop_border, bool) or not isinstance(crop_border, int) or crop_border < 0:
        raise MetricInputError(f"crop_border must be a non-negative integer, got {crop_border!r}")
    return crop_border


def check_cropped_size(height: int, width: int, crop_border: int, min_size: int, what: str) -> None:
    h, w = height - 2 * crop_border, width - 2 * crop_border
    if h < min_size or w < min_size:
        raise MetricInputError(
            f"{what} needs at least {min_size}x{min_size} pixels after crop_border={crop_border}, "
            f"the images are {height}x{width}"
        )
