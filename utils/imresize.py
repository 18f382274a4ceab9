"""MATLAB-compatible ``imresize(img, scale, 'bicubic')``, antialiased, the resize the super-resolution
literature degrades with ("BI": Set5/Set14/Urban100, REDS/Vid4 BI, Real-ESRGAN's final resize).

Per axis (Keys, "Cubic convolution interpolation for digital image processing", IEEE TASSP 1981,
a = −0.5; the MATLAB ``imresize`` resampling rules):

* output length ``ceil(scale · n)``; output pixel x (1-based) samples input coordinate
  u = x / scale + 0.5 · (1 − 1 / scale) (pixel centres aligned);
* weights ``cubic(u − j)`` for the ``ceil(4) + 2`` nearest input pixels j; when downscaling with
  antialiasing the kernel is stretched to width 4 / scale, ``scale · cubic(scale · d)``;
  each row of weights is normalised to sum 1;
* out-of-range taps mirror symmetrically with the edge pixel repeated (``[1..n, n..1]``);
* H is resized, then W.

Weights are applied as a dense (out × in) matrix in float64, so the result does not depend on the
order of accumulation; float inputs come back in their dtype unrounded and unclipped (as BasicSR's
``imresize``), uint8 inputs are rounded half up and saturated (as MATLAB/Octave on uint8).
Matches BasicSR's ``matlab_functions.imresize`` to ≤ 1e-6 and Octave 7.3's ``imresize`` to one
uint8 level (tests/test_imresize.py, fixtures in ../shared/fixtures/sr).
"""
from __future__ import annotations

import math

import numpy as np
import torch


def cubic(x: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel with a = −0.5 (MATLAB's ``cubic``)."""
    ax = x.abs()
    ax2, ax3 = ax * ax, ax * ax * ax
    return ((1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
            + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)))


def resize_matrix(in_len: int, out_len: int, scale: float, antialias: bool = True) -> torch.Tensor:
    """The (out_len × in_len) float64 matrix of one axis' resize (module docstring)."""
    kernel_width = 4.0
    stretch = antialias and scale < 1
    if stretch:
        kernel_width /= scale
    x = torch.arange(1, out_len + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = torch.floor(u - kernel_width / 2)
    taps = int(math.ceil(kernel_width)) + 2
    index = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]   # 1-based input positions
    distance = u[:, None] - index
    weights = scale * cubic(distance * scale) if stretch else cubic(distance)
    weights = weights / weights.sum(dim=1, keepdim=True)
    # Symmetric mirror with the edge repeated: ... 2 1 | 1 2 ... n | n n-1 ...
    period = 2 * in_len
    j = torch.remainder(index.long() - 1, period)
    j = torch.where(j < in_len, j, period - 1 - j)
    matrix = torch.zeros(out_len, in_len, dtype=torch.float64)
    matrix.scatter_add_(1, j, weights)
    return matrix


def output_size(in_len: int, scale: float) -> int:
    return int(math.ceil(in_len * scale))


def imresize(img, scale: float, antialias: bool = True):
    """Resize by ``scale`` (e.g. 1/4, 2) like MATLAB's bicubic ``imresize``.

    ``img``: a torch tensor ``[..., H, W]`` (float; any leading dims: C×H×W, B×C×H×W,
    B×T×C×H×W) or a numpy array ``H×W`` / ``H×W×C`` (channels last, float or uint8).
    Returns the same type and layout; float values are not rounded or clipped.
    """
    if not scale > 0:
        raise ValueError(f"imresize: scale must be > 0, got {scale}")
    if isinstance(img, np.ndarray):
        uint8 = img.dtype == np.uint8
        if img.ndim not in (2, 3):
            raise ValueError(f"imresize: numpy images must be H×W or H×W×C, got shape {img.shape}")
        t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float64))
        t = t if img.ndim == 2 else t.permute(2, 0, 1)
        out = _resize(t, scale, antialias)
        out = out if img.ndim == 2 else out.permute(1, 2, 0)
        array = out.numpy()
        if uint8:
            return np.clip(np.floor(array + 0.5), 0, 255).astype(np.uint8)
        return array.astype(img.dtype if img.dtype.kind == "f" else np.float32)
    if not isinstance(img, torch.Tensor):
        raise TypeError(f"imresize: expected a torch tensor or numpy array, got {type(img).__name__}")
    if not img.is_floating_point():
        raise TypeError("imresize: torch inputs must be floating point (uint8 images: pass a numpy array)")
    return _resize(img.double(), scale, antialias).to(img.dtype)


def _resize(x: torch.Tensor, scale: float, antialias: bool) -> torch.Tensor:
    h, w = x.shape[-2:]
    rows = resize_matrix(h, output_size(h, scale), scale, antialias).to(x.device)
    cols = resize_matrix(w, output_size(w, scale), scale, antialias).to(x.device)
    return torch.matmul(torch.matmul(rows, x), cols.T)
