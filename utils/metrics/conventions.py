"""Other toolboxes' PSNR/SSIM conventions, re-implemented to measure how far they are from ours.

Each variant scores one pair of 8-bit RGB images (H×W×3 uint8) the way the named toolbox does
when given 8-bit files. They exist to document differences (docs/metrics.md), not to be used
for reporting. Run on two folders:

    python -m utils.metrics.conventions --gt_folder GT --pred_folder PRED [--crop_border N]

Sources, as read in each project's code:
* BasicSR (basicsr/metrics/psnr_ssim.py): calculate_psnr/ssim (numpy; = ours) and
  calculate_psnr_pt/ssim_pt (torch: [0, 1] data, MSE + 1e-8, Y in float32).
* MMagic (mmagic/evaluation/metrics/{psnr,ssim,metrics_utils}.py): BasicSR formulas in float32.
* IQA-PyTorch / pyiqa (pyiqa/archs/{psnr,ssim}_arch.py, utils/color_util.py): PSNR on [0, 1]
  float32 with MSE + 1e-8; "psnry" and "ssim" use the luma of YIQ (0.299 R + 0.587 G + 0.114 B,
  full range), SSIM rounds to 8-bit levels and clips negative contrast-structure terms.
* MATLAB (Image Processing Toolbox psnr, ssim, rgb2ycbcr, rgb2gray): rgb2ycbcr/rgb2gray of uint8
  images return rounded uint8; ssim() treats an H×W×3 array as a volume (3-D Gaussian, replicate
  padding). Z. Wang's ssim_index.m / ssim.m (2004 / 2009) filter with 'valid'; ssim.m first
  averages f×f blocks, f = max(1, round(min(H, W) / 256)).
* NAFNet (basicsr/metrics/psnr_ssim.py of megvii-research/NAFNet): ssim3d on RGB, and on Y a
  2-D Gaussian with replicate padding over the full image.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from utils.metrics.common import DATA_RANGE, Y_COEFFS, Y_OFFSET
from utils.metrics.psnr_ssim import gaussian_window, psnr_np, ssim_np

YIQ_Y = (0.299, 0.587, 0.114)
# MATLAB rgb2gray weights (rounded versions of the inverse NTSC transform's first row).
MATLAB_GRAY = (0.298936021293775, 0.587043074451121, 0.114020904255103)


@dataclass(frozen=True)
class Variant:
    name: str
    metric: str  # "psnr" | "ssim"
    channel: str  # "rgb" | "y"
    toolbox: str
    description: str
    fn: Callable[[np.ndarray, np.ndarray, int], float]


def _crop(img: np.ndarray, cb: int) -> np.ndarray:
    return img[cb:-cb, cb:-cb] if cb else img


def _matlab_round(x: np.ndarray) -> np.ndarray:
    """MATLAB's round (half away from zero), as its uint8 conversions do."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def _luma(img_u8: np.ndarray, weights, offset=0.0, scale=1.0, dtype=np.float64) -> np.ndarray:
    x = img_u8.astype(dtype) / dtype(255)
    y = offset + x[..., 0] * dtype(weights[0]) * dtype(scale) + x[..., 1] * dtype(weights[1]) * dtype(scale) \
        + x[..., 2] * dtype(weights[2]) * dtype(scale)
    return y


def _ycbcr_y(img_u8, dtype=np.float64):
    """BT.601 studio-swing luma in 8-bit levels [16, 235]."""
    return _luma(img_u8, Y_COEFFS, offset=Y_OFFSET, dtype=dtype)


def _psnr_levels(a: np.ndarray, b: np.ndarray, peak: float = DATA_RANGE, eps: float = 0.0, dtype=np.float64) -> float:
    mse = np.mean((a.astype(dtype) - b.astype(dtype)) ** 2, dtype=dtype)
    if mse + eps == 0:
        return math.inf
    return float(10 * np.log10(peak * peak / (float(mse) + eps)))


def _ssim_2d(a: np.ndarray, b: np.ndarray, valid=True, relu_cs=False, dtype=np.float64) -> float:
    """Single-channel SSIM on [0, 255] data: Gaussian 11/1.5, 'valid' or replicate 'same'."""
    import cv2

    a, b = a.astype(dtype), b.astype(dtype)
    win = gaussian_window()
    window = np.outer(win, win)
    border = cv2.BORDER_REPLICATE

    def blur(x):
        out = cv2.filter2D(x, -1, window, borderType=border)
        return out[5:-5, 5:-5] if valid else out

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu1, mu2 = blur(a), blur(b)
    s11, s22, s12 = blur(a * a) - mu1 * mu1, blur(b * b) - mu2 * mu2, blur(a * b) - mu1 * mu2
    cs = (2 * s12 + c2) / (s11 + s22 + c2)
    if relu_cs:
        cs = np.maximum(cs, 0)
    return float(np.mean((2 * mu1 * mu2 + c1) / (mu1 * mu1 + mu2 * mu2 + c1) * cs))


def _block_mean(x: np.ndarray, f: int) -> np.ndarray:
    h, w = (x.shape[0] // f) * f, (x.shape[1] // f) * f
    return x[:h, :w].reshape(h // f, f, w // f, f).mean(axis=(1, 3))


# -- PSNR ---------------------------------------------------------------------------------------
def _psnr_ours(channel):
    return lambda p, g, cb: psnr_np(p, g, cb, channel == "y")


def _psnr_basicsr_pt(channel):
    def fn(p, g, cb):
        p, g = _crop(p, cb), _crop(g, cb)
        if channel == "y":
            a, b = _ycbcr_y(p, np.float32) / np.float32(255), _ycbcr_y(g, np.float32) / np.float32(255)
        else:
            a, b = p.astype(np.float32) / np.float32(255), g.astype(np.float32) / np.float32(255)
        return _psnr_levels(a.astype(np.float64), b.astype(np.float64), peak=1.0, eps=1e-8)
    return fn


def _psnr_mmagic(channel):
    def fn(p, g, cb):
        a, b = (_ycbcr_y(p, np.float32), _ycbcr_y(g, np.float32)) if channel == "y" else (p.astype(np.float32), g.astype(np.float32))
        a, b = _crop(a, cb), _crop(b, cb)
        mse = float(np.mean((a - b) ** 2))  # float32, as MMagic
        return math.inf if mse == 0 else float(20 * np.log10(255.0 / np.sqrt(mse)))
    return fn


def _psnr_pyiqa(channel):
    def fn(p, g, cb):
        p, g = _crop(p, cb), _crop(g, cb)
        if channel == "y":
            a, b = _luma(p, YIQ_Y, dtype=np.float32), _luma(g, YIQ_Y, dtype=np.float32)
        else:
            a, b = p.astype(np.float32) / np.float32(255), g.astype(np.float32) / np.float32(255)
        mse = float(np.mean((a - b) ** 2, dtype=np.float32))
        return float(10 * np.log10(1.0 / (mse + 1e-8)))
    return fn


def _psnr_matlab_y(p, g, cb):
    a = _matlab_round(_ycbcr_y(_crop(p, cb)))
    b = _matlab_round(_ycbcr_y(_crop(g, cb)))
    return _psnr_levels(a, b)


def _psnr_swapped_y(p, g, cb):
    """Y computed from BGR data taken for RGB (the channel-swap bug)."""
    return psnr_np(p[..., ::-1], g[..., ::-1], cb, test_y_channel=True)


# -- SSIM ---------------------------------------------------------------------------------------
def _ssim_ours(channel, mode="2d"):
    return lambda p, g, cb: ssim_np(p, g, cb, channel == "y", mode=mode)


def _ssim_mmagic(channel):
    def fn(p, g, cb):
        a, b = (_ycbcr_y(p, np.float32)[..., None], _ycbcr_y(g, np.float32)[..., None]) if channel == "y" \
            else (p.astype(np.float32), g.astype(np.float32))
        a, b = _crop(a, cb), _crop(b, cb)
        return float(np.mean([_ssim_2d(a[..., c], b[..., c], dtype=np.float32) for c in range(a.shape[2])]))
    return fn


def _ssim_pyiqa(channel):
    def fn(p, g, cb):
        p, g = _crop(p, cb), _crop(g, cb)
        if channel == "y":
            a = np.round(_luma(p, YIQ_Y, scale=255.0, dtype=np.float32)).astype(np.float64)[..., None]
            b = np.round(_luma(g, YIQ_Y, scale=255.0, dtype=np.float32)).astype(np.float64)[..., None]
        else:
            a, b = p.astype(np.float64), g.astype(np.float64)
        return float(np.mean([_ssim_2d(a[..., c], b[..., c], relu_cs=True) for c in range(a.shape[2])]))
    return fn


def _ssim_matlab_y(valid: bool):
    def fn(p, g, cb):
        a = _matlab_round(_ycbcr_y(_crop(p, cb)))
        b = _matlab_round(_ycbcr_y(_crop(g, cb)))
        return _ssim_2d(a, b, valid=valid)
    return fn


def _ssim_nafnet_y(p, g, cb):
    return _ssim_2d(_ycbcr_y(_crop(p, cb)), _ycbcr_y(_crop(g, cb)), valid=False)


def _ssim_wang_gray(downsample: bool):
    def fn(p, g, cb):
        a = _matlab_round(_luma(_crop(p, cb), MATLAB_GRAY, scale=255.0))
        b = _matlab_round(_luma(_crop(g, cb), MATLAB_GRAY, scale=255.0))
        f = max(1, int(_matlab_round(np.array(min(a.shape) / 256.0))))
        if downsample and f > 1:
            a, b = _block_mean(a, f), _block_mean(b, f)
        return _ssim_2d(a, b, valid=True)
    return fn


VARIANTS: list[Variant] = [
    Variant("ours", "psnr", "rgb", "restorelab = BasicSR calculate_psnr = MATLAB psnr", "8-bit levels, float64", _psnr_ours("rgb")),
    Variant("basicsr_pt", "psnr", "rgb", "BasicSR calculate_psnr_pt", "[0, 1] data, MSE + 1e-8", _psnr_basicsr_pt("rgb")),
    Variant("mmagic", "psnr", "rgb", "MMagic PSNR", "float32 arithmetic", _psnr_mmagic("rgb")),
    Variant("pyiqa", "psnr", "rgb", "pyiqa psnr", "[0, 1] float32, MSE + 1e-8", _psnr_pyiqa("rgb")),
    Variant("ours", "psnr", "y", "restorelab = BasicSR calculate_psnr", "BT.601 Y, float64, not rounded", _psnr_ours("y")),
    Variant("basicsr_pt", "psnr", "y", "BasicSR calculate_psnr_pt", "Y in float32, [0, 1], MSE + 1e-8", _psnr_basicsr_pt("y")),
    Variant("mmagic", "psnr", "y", "MMagic PSNR convert_to='Y'", "Y and MSE in float32", _psnr_mmagic("y")),
    Variant("matlab", "psnr", "y", "MATLAB psnr(rgb2ycbcr(uint8))", "Y rounded to uint8", _psnr_matlab_y),
    Variant("pyiqa", "psnr", "y", "pyiqa psnry", "YIQ luma (0.299/0.587/0.114), full range", _psnr_pyiqa("y")),
    Variant("swapped", "psnr", "y", "R and B swapped (bug)", "BGR data read as RGB", _psnr_swapped_y),
    Variant("ours", "ssim", "rgb", "restorelab = BasicSR calculate_ssim", "2-D, valid, mean of channels", _ssim_ours("rgb")),
    Variant("mmagic", "ssim", "rgb", "MMagic SSIM", "float32 arithmetic", _ssim_mmagic("rgb")),
    Variant("pyiqa", "ssim", "rgb", "pyiqa ssimc", "negative cs clipped", _ssim_pyiqa("rgb")),
    Variant("ssim_3d", "ssim", "rgb", "MATLAB ssim() on RGB = NAFNet ssim3d", "3-D Gaussian over H×W×C, replicate", _ssim_ours("rgb", "3d")),
    Variant("ours", "ssim", "y", "restorelab = BasicSR calculate_ssim", "BT.601 Y not rounded, valid", _ssim_ours("y")),
    Variant("mmagic", "ssim", "y", "MMagic SSIM convert_to='Y'", "float32 arithmetic", _ssim_mmagic("y")),
    Variant("matlab_valid", "ssim", "y", "MATLAB ssim_index.m on rgb2ycbcr Y", "Y rounded, valid", _ssim_matlab_y(True)),
    Variant("matlab", "ssim", "y", "MATLAB ssim() on rgb2ycbcr Y", "Y rounded, replicate padding, full map", _ssim_matlab_y(False)),
    Variant("nafnet", "ssim", "y", "NAFNet calculate_ssim(test_y_channel)", "Y not rounded, replicate padding", _ssim_nafnet_y),
    Variant("pyiqa", "ssim", "y", "pyiqa ssim (default)", "YIQ luma rounded, valid", _ssim_pyiqa("y")),
    Variant("wang_gray", "ssim", "y", "Wang ssim.m on MATLAB rgb2gray, no downsampling", "gray rounded, valid", _ssim_wang_gray(False)),
    Variant("wang_gray_ds", "ssim", "y", "Wang ssim.m on rgb2gray (default)", "block-mean downsampling by f", _ssim_wang_gray(True)),
]


def score_variants(pred_u8: np.ndarray, gt_u8: np.ndarray, crop_border: int = 0) -> dict[tuple[str, str, str], float]:
    """{(metric, channel, variant name): value} for one 8-bit RGB pair."""
    return {(v.metric, v.channel, v.name): v.fn(pred_u8, gt_u8, crop_border) for v in VARIANTS}


def markdown_table(rows: dict[str, dict[tuple[str, str, str], float]]) -> str:
    """Markdown table: one row per variant, one column per image, plus the largest |Δ| to ours."""
    names = list(rows)
    lines = ["| metric | variant | toolbox | " + " | ".join(names) + " | max abs Δ vs ours |",
             "|---|---|---|" + "---|" * (len(names) + 1)]
    for v in VARIANTS:
        key = (v.metric, v.channel, v.name)
        ours = (v.metric, v.channel, "ours")
        vals = [rows[n][key] for n in names]
        deltas = [abs(rows[n][key] - rows[n][ours]) if not (math.isinf(rows[n][key]) or math.isinf(rows[n][ours]))
                  else (0.0 if rows[n][key] == rows[n][ours] else math.inf) for n in names]
        fmt = (lambda x: "inf" if math.isinf(x) else f"{x:.4f}") if v.metric == "psnr" else (lambda x: f"{x:.6f}")
        dfmt = "—" if v.name == "ours" else ("inf" if math.isinf(max(deltas)) else f"{max(deltas):.2g}")
        lines.append(f"| {v.metric.upper()} {v.channel.upper()} | {v.name} | {v.toolbox} ({v.description}) | "
                     + " | ".join(fmt(x) for x in vals) + f" | {dfmt} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from utils.image_io import read_image
    from utils.metrics.folders import pair_images

    parser = argparse.ArgumentParser(description="Score image pairs under other toolboxes' PSNR/SSIM conventions (8-bit files).")
    parser.add_argument("--gt_folder", required=True)
    parser.add_argument("--pred_folder", required=True)
    parser.add_argument("--crop_border", type=int, default=0)
    args = parser.parse_args(argv)
    rows = {}
    for pair in pair_images(args.gt_folder, args.pred_folder):
        gt = np.round(read_image(pair.gt).astype(np.float64) * 255).astype(np.uint8)
        pred = np.round(read_image(pair.pred).astype(np.float64) * 255).astype(np.uint8)
        rows[pair.key] = score_variants(pred, gt, args.crop_border)
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    from utils.errors import run_cli

    run_cli(main)
