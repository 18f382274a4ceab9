"""utils.image_io.quantize, the lab's one quantiser, against numpy's float64 rounding and the
levels cv2 writes to (and reads back from) an 8-bit / 16-bit PNG."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from utils.image_io import quantize, quantize_levels, read_image, write_image


def values(dtype=np.float64) -> np.ndarray:
    levels = np.arange(256, dtype=np.float64)
    rng = np.random.default_rng(0)
    return np.concatenate([rng.random(1000) * 1.4 - 0.2, (levels + 0.5) / 255.0, levels / 255.0,
                           [-0.2, 0.0, 0.51 / 255, 0.49 / 255, 1.5 / 255, 2.5 / 255, 0.5, 1.0, 1.3]]).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_and_torch_give_the_float64_rounded_levels(dtype):
    x = values(dtype)
    expected = np.round(np.clip(x.astype(np.float64), 0, 1) * 255) / 255  # half to even in float64
    q_np = quantize(x)
    q_t = quantize(torch.from_numpy(x))
    assert isinstance(q_np, np.ndarray) and q_np.dtype == np.float32
    assert isinstance(q_t, torch.Tensor) and q_t.dtype == torch.float32
    assert np.array_equal(q_np, expected.astype(np.float32))
    assert np.array_equal(q_t.numpy(), expected.astype(np.float32))
    # Ties to even: 0.5/255 -> 0, 1.5/255 -> 2, 2.5/255 -> 2.
    assert np.array_equal(quantize_levels(np.array([0.5, 1.5, 2.5]) / 255), [0, 2, 2])
    assert quantize_levels(x).dtype == np.uint8
    assert np.array_equal(quantize_levels(x), np.round(q_np.astype(np.float64) * 255).astype(np.uint8))


def test_quantised_values_are_what_a_png_holds(tmp_path):
    rng = np.random.default_rng(1)
    img = (rng.random((9, 11, 3)) * 1.2 - 0.1).astype(np.float32)
    img[0, 0] = [0.5 / 255, 1.5 / 255, 2.5 / 255]  # exact ties
    write_image(tmp_path / "a.png", img)
    assert np.array_equal(read_image(tmp_path / "a.png"), quantize(img))
    t = torch.from_numpy(img.transpose(2, 0, 1).copy())
    assert np.array_equal(quantize(t).numpy().transpose(1, 2, 0), read_image(tmp_path / "a.png"))
    write_image(tmp_path / "b.png", img, bits=16)
    raw = cv2.imread(str(tmp_path / "b.png"), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16
    assert np.array_equal(raw[:, :, ::-1], np.round(np.clip(img.astype(np.float64), 0, 1) * 65535).astype(np.uint16))


def test_16_bits_and_bad_bits():
    x = torch.rand(1000, dtype=torch.float64)
    q16 = quantize(x, 16)
    assert q16.dtype == torch.float32
    k = q16.double() * 65535
    assert (k - k.round()).abs().max() < 1e-2                      # float32 k/65535 identifies k
    assert (q16.double() - x).abs().max() <= 0.5 / 65535 + 1e-7    # nearest level
    with pytest.raises(ValueError, match="bits must be 8 or 16"):
        quantize(x, 12)
    with pytest.raises(ValueError, match="bits must be 8 or 16"):
        quantize(x.numpy(), 12)
