"""One level of the 2-D Haar wavelet transform, as WF-VAE uses it (Li et al., "WF-VAE: Enhancing
Video VAE by Wavelet-Driven Energy Flow for Latent Video Diffusion Model", CVPR 2025).

For every channel and every 2×2 block ``[[a, b], [c, d]]`` (a top-left) the forward transform
gives four coefficients, orthonormal (kernels divided by 2, so the inverse uses the same
kernels and the transform preserves energy):

======  =====================  ==============================  PyWavelets ``dwt2(x, 'haar')``
band    formula                meaning
======  =====================  ==============================  =============================
LL      (a + b + c + d) / 2    low-pass                        cA
LH      (a + b − c − d) / 2    top minus bottom ("ad")         cH
HL      (a − b + c − d) / 2    left minus right ("da")         cV
HH      (a − b − c + d) / 2    diagonal ("dd")                 cD
======  =====================  ==============================  =============================

Channel order of the output is **band-major**: ``[LL_0..LL_{C-1}, LH_0.., HL_0.., HH_0..]``, so
``coeffs[:, :C]`` is the low-pass image (the official ``HaarWaveletTransform2D`` order).
There is no padding: H and W must be even. The inverse (``conv_transpose2d`` with the same
kernels, the four bands summed) reconstructs exactly up to float rounding.

The modules keep the kernels as persistent buffers ``aa``, ``ad``, ``da``, ``dd`` ([1, 1, 2, 2])
because official WF-VAE state dicts carry them under those names.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_PATTERNS = {
    "aa": ((1.0, 1.0), (1.0, 1.0)),
    "ad": ((1.0, 1.0), (-1.0, -1.0)),
    "da": ((1.0, -1.0), (1.0, -1.0)),
    "dd": ((1.0, -1.0), (-1.0, 1.0)),
}
BANDS = ("aa", "ad", "da", "dd")  # LL, LH, HL, HH


def haar_kernels(dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """The four analysis kernels stacked as a ``4×1×2×2`` tensor in band order (LL, LH, HL, HH)."""
    return torch.tensor([_PATTERNS[b] for b in BANDS], dtype=dtype, device=device).unsqueeze(1) / 2


def haar2d(x: torch.Tensor, kernels: torch.Tensor | None = None) -> torch.Tensor:
    """Forward transform: ``B×C×H×W`` → ``B×4C×H/2×W/2`` (band-major)."""
    b, c, h, w = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"haar2d: height and width must be even, got {h}x{w}")
    k = haar_kernels(x.dtype, x.device) if kernels is None else kernels.to(x.dtype)
    y = F.conv2d(x.reshape(b * c, 1, h, w), k, stride=2)  # (B·C)×4×h/2×w/2
    return y.reshape(b, c, 4, h // 2, w // 2).transpose(1, 2).reshape(b, 4 * c, h // 2, w // 2)


def ihaar2d(coeffs: torch.Tensor, kernels: torch.Tensor | None = None) -> torch.Tensor:
    """Inverse transform: ``B×4C×h×w`` (band-major) → ``B×C×2h×2w``."""
    b, c4, h, w = coeffs.shape
    if c4 % 4:
        raise ValueError(f"ihaar2d: the channel count must be a multiple of 4, got {c4}")
    c = c4 // 4
    k = haar_kernels(coeffs.dtype, coeffs.device) if kernels is None else kernels.to(coeffs.dtype)
    bands = coeffs.reshape(b, 4, c, h, w).transpose(1, 2).reshape(b * c, 4, h, w)
    return F.conv_transpose2d(bands, k, stride=2).reshape(b, c, 2 * h, 2 * w)


class _HaarBase(nn.Module):
    def __init__(self):
        super().__init__()
        for name in BANDS:
            self.register_buffer(name, torch.tensor(_PATTERNS[name]).view(1, 1, 2, 2) / 2)

    def kernels(self) -> torch.Tensor:
        return torch.cat([getattr(self, n) for n in BANDS], dim=0)


class HaarWaveletTransform2D(_HaarBase):
    """``haar2d`` as a module (buffers ``aa/ad/da/dd`` as in official state dicts)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return haar2d(x, self.kernels())


class InverseHaarWaveletTransform2D(_HaarBase):
    """``ihaar2d`` as a module (buffers ``aa/ad/da/dd`` as in official state dicts)."""

    def forward(self, coeffs: torch.Tensor) -> torch.Tensor:
        return ihaar2d(coeffs, self.kernels())
