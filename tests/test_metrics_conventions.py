"""Other toolboxes' conventions (docs/metrics.md): emulations checked against published numbers."""
from __future__ import annotations

import math

import numpy as np
import pytest

from utils.image_io import read_image
from utils.metrics.conventions import VARIANTS, markdown_table, score_variants

NAMES = ("I03.bmp", "I04.bmp", "I08.bmp")
# IQA-PyTorch's calibration of the TID2013 pairs (ResultsCalibra/ResultsCalibra.md and
# calibration_summary.csv, 4 decimals): "SSIM(org)" = Z. Wang's MATLAB ssim.m on rgb2gray
# without downsampling; "SSIM(ours imported)" = pyiqa's default ssim; "psnr(ours)" = pyiqa psnr.
WANG_SSIM_GRAY = (0.6993, 0.9978, 0.9669)
PYIQA_SSIM = (0.6997, 0.9978, 0.9671)
PYIQA_PSNR = (21.1136, 20.9872, 23.3002)


@pytest.fixture(scope="module")
def scores(fixtures_dir):
    folder = fixtures_dir / "metrics"
    out = {}
    for name in NAMES:
        gt = np.round(read_image(folder / "ref" / name).astype(np.float64) * 255).astype(np.uint8)
        pred = np.round(read_image(folder / "dist" / name).astype(np.float64) * 255).astype(np.uint8)
        out[name] = score_variants(pred, gt)
    return out


def test_emulations_reproduce_published_values(scores):
    for name, wang, iqa_ssim, iqa_psnr in zip(NAMES, WANG_SSIM_GRAY, PYIQA_SSIM, PYIQA_PSNR):
        assert scores[name][("ssim", "y", "wang_gray")] == pytest.approx(wang, abs=1e-4)
        assert scores[name][("ssim", "y", "pyiqa")] == pytest.approx(iqa_ssim, abs=1e-4)
        assert scores[name][("psnr", "rgb", "pyiqa")] == pytest.approx(iqa_psnr, abs=1e-4)


def test_rounded_matlab_y_behaves_as_the_fixture_notes(scores):
    """Rounding Y (MATLAB rgb2ycbcr on uint8) moves PSNR by ~1e-3 dB and makes I04 infinite."""
    assert math.isinf(scores["I04.bmp"][("psnr", "y", "matlab")])
    for name in ("I03.bmp", "I08.bmp"):
        delta = abs(scores[name][("psnr", "y", "matlab")] - scores[name][("psnr", "y", "ours")])
        assert 1e-4 < delta < 1e-2


def test_float32_toolboxes_agree_closely_and_colour_spaces_do_not(scores):
    for name in NAMES:
        s = scores[name]
        assert abs(s[("psnr", "rgb", "mmagic")] - s[("psnr", "rgb", "ours")]) < 1e-5
        assert abs(s[("ssim", "rgb", "mmagic")] - s[("ssim", "rgb", "ours")]) < 1e-4
        # YIQ luma is a different signal: ~1.3 dB lower PSNR on these pairs
        assert s[("psnr", "y", "pyiqa")] < s[("psnr", "y", "ours")] - 1.0
    # swapping R and B changes the Y-PSNR of the colour-distorted pair by > 20 dB
    assert scores["I04.bmp"][("psnr", "y", "ours")] - scores["I04.bmp"][("psnr", "y", "swapped")] > 20


def test_basicsr_torch_epsilon_caps_identical_images():
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    s = score_variants(img, img)
    assert math.isinf(s[("psnr", "rgb", "ours")])
    assert s[("psnr", "rgb", "basicsr_pt")] == pytest.approx(80.0, abs=1e-9)
    assert s[("psnr", "rgb", "pyiqa")] == pytest.approx(80.0, abs=1e-9)


def test_markdown_table_lists_every_variant(scores):
    table = markdown_table(scores)
    assert table.count("\n") == len(VARIANTS) + 1
    assert "| PSNR Y | matlab |" in table and "inf" in table
