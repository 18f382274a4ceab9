"""utils.imresize against BasicSR's MATLAB-style imresize (float, 1e-6) and GNU Octave's imresize
(uint8 to one level; float64 to 1e-6), fixtures in ../shared/fixtures/sr."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from utils.imresize import imresize, resize_matrix

SCALES = {"1_2": 1 / 2, "1_3": 1 / 3, "1_4": 1 / 4, "2": 2}


@pytest.fixture(scope="module")
def basicsr(fixtures_dir):
    return load_file(str(fixtures_dir / "sr" / "basicsr_imresize.safetensors"))


@pytest.fixture(scope="module")
def octave(fixtures_dir):
    return load_file(str(fixtures_dir / "sr" / "octave_imresize.safetensors"))


@pytest.mark.parametrize("tag", SCALES)
@pytest.mark.parametrize("image, output", [("random.input_chw", "random"), ("astronaut.rgb_chw", "astronaut.rgb"),
                                           ("astronaut.gray_hw", "astronaut.gray")])
def test_matches_basicsr_imresize(basicsr, image, output, tag):
    expected = basicsr[f"{output}.imresize.scale_{tag}"]
    out = imresize(torch.from_numpy(basicsr[image]), SCALES[tag])
    assert out.dtype == torch.float32 and tuple(out.shape) == expected.shape
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-6, rtol=0)


def test_numpy_hwc_equals_torch_chw(basicsr):
    hwc, chw = basicsr["random.input_hwc"], torch.from_numpy(basicsr["random.input_chw"])
    out = imresize(hwc, 1 / 4)
    assert out.dtype == np.float32 and out.shape == (10, 14, 3)
    np.testing.assert_allclose(out, imresize(chw, 1 / 4).permute(1, 2, 0).numpy(), atol=1e-7)


@pytest.mark.parametrize("tag", SCALES)
def test_matches_octave(octave, tag):
    u8 = octave["input_u8_hwc"]
    out_u8 = imresize(u8, SCALES[tag])
    assert out_u8.dtype == np.uint8 and out_u8.shape == octave[f"imresize_u8.scale_{tag}"].shape
    diff = np.abs(out_u8.astype(int) - octave[f"imresize_u8.scale_{tag}"].astype(int))
    assert diff.max() <= 1, diff.max()
    out = imresize(u8.astype(np.float64) / 255, SCALES[tag])
    np.testing.assert_allclose(out, octave[f"imresize_double.scale_{tag}"], atol=1e-6, rtol=0)


def test_weights_sum_to_one_and_identity_at_scale_one():
    for n, m, s in ((37, 19, 1 / 2), (53, 18, 1 / 3), (16, 64, 4)):
        np.testing.assert_allclose(resize_matrix(n, m, s).sum(1).numpy(), 1.0, atol=1e-12)
    x = torch.rand(2, 3, 9, 11, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(imresize(x, 1), x, atol=1e-6, rtol=0)


def test_bad_input():
    with pytest.raises(ValueError, match="scale"):
        imresize(torch.zeros(4, 4), 0)
    with pytest.raises(TypeError, match="floating"):
        imresize(torch.zeros(4, 4, dtype=torch.uint8), 0.5)
