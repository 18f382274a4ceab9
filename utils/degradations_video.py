"""The two ×4 degradations of the video SR literature, exactly as its MATLAB scripts make them.

* **BI**: MATLAB ``imresize(gt, 1/4, 'bicubic')`` (antialiased bicubic, utils/imresize.py).
  Used for REDS4 and Vid4-BI; IART's issue #8.
* **BD**: IART's ``datasets/bd_reds.m`` = BasicVSR's ``BD_degradation.m``::

      kernel = fspecial('gaussian', 12, 1.6);           % EVEN size: taps at -5.5 … 5.5
      lq = imfilter(gt, kernel, 'replicate');            % uint8 in → uint8 out (rounded)
      lq = lq(2:4:end-2, 2:4:end-2, :);                  % 1-based rows/cols 2, 6, … ; 0-based 1, 5, …

  For the even kernel ``imfilter`` anchors at element 6, so output pixel i reads inputs
  i-5 … i+6; the blur is therefore centred at i + 0.5, and sampling i = 4j + 1 puts **LR pixel j
  at HR coordinate 4j + 1.5** (0-based pixel centres) — the same place as BI's
  ``4j + 1.5`` (the centre of the 4×4 block 4j … 4j+3). Used for Vid4-BD, UDM10, Vimeo-90K-T BD.
  BasicSR's ``duf_downsample`` (13×13, reflect, LR j at HR 4j) is a different convention.

Both take float tensors ``[..., H, W]`` (any leading dims: C×H×W, T×C×H×W …; values unclipped,
computed in float64) or uint8 numpy ``H×W×C`` images (rounded half up and saturated as
MATLAB/Octave do on uint8).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from utils.errors import ConfigError
from utils.imresize import imresize

DEGRADATIONS = ("BI", "BD")


def gaussian_kernel(size: int = 12, sigma: float = 1.6) -> torch.Tensor:
    """MATLAB ``fspecial('gaussian', size, sigma)`` (float64, sum 1; taps at -(size-1)/2 … (size-1)/2)."""
    r = (torch.arange(size, dtype=torch.float64) - (size - 1) / 2)
    k = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma ** 2))
    k[k < torch.finfo(torch.float64).eps * k.max()] = 0
    return k / k.sum()


def bd_kernel_size(sigma: float) -> int:
    """``ceil(sigma * 3) * 2 + 2`` (12 for σ = 1.6), as the MATLAB scripts."""
    return int(math.ceil(sigma * 3) * 2 + 2)


def _imfilter_replicate(x: torch.Tensor, kernel: torch.Tensor, start: int = 0, step: int = 1) -> torch.Tensor:
    """MATLAB ``imfilter(x, k, 'replicate')`` (correlation, anchor floor((n+1)/2) 1-based) over the
    last two dims, evaluated only at rows/cols ``start, start + step, …`` (``[start::step]`` of the
    full result). A rank-1 kernel (a Gaussian) is applied as two 1-D passes."""
    kh, kw = kernel.shape
    top, left = (kh + 1) // 2 - 1, (kw + 1) // 2 - 1
    lead = x.shape[:-2]
    h, w = x.shape[-2:]
    flat = x.reshape(-1, 1, h, w)
    flat = F.pad(flat, (left, kw - 1 - left, top, kh - 1 - top), mode="replicate")[..., start:, start:]
    u, sv, vh = torch.linalg.svd(kernel)
    if sv[1:].abs().max() <= 1e-12 * sv[0]:  # separable: k = a ⊗ b
        a = (u[:, 0] * sv[0].sqrt()).to(flat.dtype)
        b = (vh[0] * sv[0].sqrt()).to(flat.dtype)
        out = F.conv2d(flat, a.view(1, 1, kh, 1), stride=(step, 1))
        out = F.conv2d(out, b.view(1, 1, 1, kw), stride=(1, step))
    else:
        out = F.conv2d(flat, kernel.to(flat.dtype).view(1, 1, kh, kw), stride=step)
    return out.reshape(*lead, *out.shape[-2:])


def bd_downscale(img, scale: int = 4, sigma: float = 1.6):
    """BD: Gaussian blur (σ, even kernel, replicate border) then every ``scale``-th pixel from
    0-based ``scale/2 - 1`` (module docstring). Tensor ``[..., H, W]`` or numpy H×W(×C) (uint8 exact)."""
    if scale < 2 or scale % 2:
        raise ConfigError(f"bd_downscale: scale must be an even integer >= 2, got {scale}")
    kernel = gaussian_kernel(bd_kernel_size(sigma), sigma)
    start = scale // 2 - 1

    def blur_sample(t: torch.Tensor) -> torch.Tensor:
        h, w = t.shape[-2:]
        n_h, n_w = len(range(start, h - scale // 2, scale)), len(range(start, w - scale // 2, scale))
        return _imfilter_replicate(t, kernel, start, scale)[..., :n_h, :n_w]

    if isinstance(img, np.ndarray):
        uint8 = img.dtype == np.uint8
        t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float64))
        t = t if img.ndim == 2 else t.permute(2, 0, 1)
        lq = blur_sample(t)
        if uint8:
            lq = torch.clamp(torch.floor(lq + 0.5), 0, 255)
        lq = lq if img.ndim == 2 else lq.permute(1, 2, 0)
        return lq.numpy().astype(np.uint8) if uint8 else lq.numpy().astype(img.dtype if img.dtype.kind == "f" else np.float32)
    if not isinstance(img, torch.Tensor) or not img.is_floating_point():
        raise TypeError("bd_downscale: expected a float tensor or a numpy array")
    return blur_sample(img.double()).to(img.dtype)


def bi_downscale(img, scale: int = 4):
    """BI: MATLAB bicubic ``imresize(img, 1/scale)`` (antialiased)."""
    return imresize(img, 1.0 / scale)


def degrade(img, kind: str = "BD", scale: int = 4):
    """``BI`` or ``BD`` ×``scale`` (see the module docstring)."""
    if kind not in DEGRADATIONS:
        raise ConfigError(f"degradation must be one of {', '.join(DEGRADATIONS)}, got {kind!r}")
    return bi_downscale(img, scale) if kind == "BI" else bd_downscale(img, scale)


def lr_position(j, scale: int = 4) -> float:
    """HR coordinate (0-based pixel centres) of LR pixel ``j`` for BI and BD: ``scale·j + (scale-1)/2``."""
    return scale * j + (scale - 1) / 2
