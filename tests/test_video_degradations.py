"""BI/BD ×4 against GNU Octave running IART's MATLAB recipe (../shared/fixtures/sr/octave_imresize.*),
the BD kernel anchor by an impulse, and the geometry (LR j at HR 4j + 1.5 for both) on a ramp."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from utils.degradations_video import bd_downscale, bi_downscale, degrade, gaussian_kernel, lr_position


@pytest.fixture(scope="module")
def octave(fixtures_dir):
    return {k: v.numpy() for k, v in load_file(str(fixtures_dir / "sr" / "octave_imresize.safetensors")).items()}


def test_bd_kernel_is_fspecial(octave):
    np.testing.assert_allclose(gaussian_kernel(12, 1.6).numpy(), octave["bd.kernel"], atol=1e-15)


def test_bd_uint8_is_exact(octave):
    lq = bd_downscale(octave["input_u8_hwc"], 4)
    assert lq.dtype == np.uint8 and lq.shape == (16, 16, 3)
    np.testing.assert_array_equal(lq, octave["bd.lq_u8"])


def test_bd_float_matches_octave_double(octave):
    gt = torch.from_numpy(octave["input_u8_hwc"].astype(np.float64)).permute(2, 0, 1)
    lq = bd_downscale(gt, 4).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(lq, octave["bd.lq_double"], atol=1e-9)
    # tensors with leading dims (a T×C×H×W clip) give the per-frame result
    clip = torch.stack([gt, gt.flip(-1)]).float() / 255
    out = bd_downscale(clip, 4)
    assert out.shape == (2, 3, 16, 16)
    torch.testing.assert_close(out[0].double() * 255, torch.from_numpy(octave["bd.lq_double"]).permute(2, 0, 1), atol=1e-4, rtol=0)


def test_bi_uint8_within_one_level(octave):
    lq = bi_downscale(octave["input_u8_hwc"], 4)
    diff = np.abs(lq.astype(int) - octave["imresize_u8.scale_1_4"].astype(int))
    assert diff.max() <= 1


def test_bd_impulse_pins_the_anchor():
    x = np.zeros((32, 32))
    x[13, 17] = 1.0
    k = gaussian_kernel(12, 1.6).numpy()
    # blur output(i) = sum_k h(k) in(i + k - 5), k = 0..11: the impulse at 13 reaches rows 7..18
    lq = bd_downscale(x, 2)  # scale 2 samples rows 0, 2, 4, ... (start scale/2 - 1 = 0)
    rows = np.nonzero(lq.sum(1))[0] * 2
    cols = np.nonzero(lq.sum(0))[0] * 2
    assert rows.min() >= 13 - 6 and rows.max() <= 13 + 5 and cols.min() >= 17 - 6 and cols.max() <= 17 + 5
    # the weight at output row i is k[13 - i + 5] (taps -5..+6)
    np.testing.assert_allclose(lq[10 // 2, 16 // 2], k[13 - 10 + 5, 17 - 16 + 5], rtol=1e-12)


@pytest.mark.parametrize("kind", ["BI", "BD"])
def test_ramp_geometry(kind):
    h, w = 64, 64
    ramp = torch.arange(w, dtype=torch.float64).expand(h, w).clone()
    lq = degrade(ramp, kind, 4)
    j = torch.arange(lq.shape[-1], dtype=torch.float64)
    inner = slice(3, -3)  # away from the replicated/mirrored border
    torch.testing.assert_close(lq[8, inner], (4 * j + 1.5)[inner], atol=1e-9, rtol=0)
    assert lr_position(2) == 9.5
