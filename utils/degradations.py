"""Composable image degradations: ops with parameter ranges, probabilities and order from YAML,
every draw from the sample's seeded ``torch.Generator`` and recorded (``deg_params``).

A pipeline is a list of op specs (``{op: blur, p: 0.8, sigma: [0.2, 1.5]}``), run in order. Each
op first *draws* its parameters (``draw(generator, size) -> dict``: whether it applies, its
strengths, output size), then *applies* them (``apply(x, params, generator)``; noise tensors
come from the same generator). The record of the draws is a list of plain dicts, JSON-serialised
with the sample, so a validation set is fixed and any training sample can be reproduced.

Images are float tensors C×H×W in [0, 1] (RGB, or 1 channel). Ops:

* ``blur``: a kernel from ``kernel_list`` (``iso``, ``aniso``, ``generalized_iso/aniso``,
  ``plateau_iso/aniso``, ``sinc``, ``motion``) with ``kernel_prob``; kernels are BasicSR's
  (``basicsr/data/degradations.py``, Wang et al., "Real-ESRGAN", ICCVW 2021) and match its fixture
  to 1e-6; applied with :func:`filter2D` (cross-correlation, reflect-101 border).
* ``sv_blur``: the lab's spatially varying PSF fields (``psf.svpsf.PSFSimulator`` options),
  rendered by ``utils.sv_renderer.SVRenderer``.
* ``resize``: ``up``/``down``/``keep`` with ``resize_prob``, scale range, mode from ``modes``
  (``area``, ``bilinear``, ``bicubic`` = ``F.interpolate`` without antialiasing, as Real-ESRGAN;
  ``matlab`` = MATLAB-compatible antialiased bicubic, ``utils.imresize``); or a fixed ``to_scale``
  relative to the pipeline's input (the final ×1/s of SR).
* ``noise``: Gaussian (σ in 8-bit levels), Poisson (BasicSR's ``generate_poisson_noise_pt``:
  the image's number of distinct levels rounded up to a power of two, × ``scale``) or
  Poisson–Gaussian (``utils.noise.poisson_gaussian_noise``, photons at white + read noise, in
  linear light); colour or gray (``gray_prob``: one noise field on every channel).
* ``jpeg``: real libjpeg through PIL at a quality drawn from ``quality``; the input is clamped to
  [0, 1] and rounded to 8 bits first (never truncated or wrapped).
* ``grayscale``: ITU-R BT.601 luma (PIL's ``convert("L")`` weights) on every channel.
* ``dynamic_range``: ``black + (white - black)·x^gamma`` (a flat, low-contrast scan/film look).
* ``quantize``: clamp and round to 8 bits.
* ``one_of``: one of ``branches`` (lists of op specs) with probabilities ``probs``.

:func:`realesrgan_preset` builds the second-order model of Real-ESRGAN with its published ranges
and probabilities (``options/train_realesrgan_x4plus.yml``, ``realesrgan_model.py``);
:class:`USMSharp` is its sharpening of the target (``basicsr/utils/img_process_util.py``).
"""
from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from utils.errors import ConfigError

# ---------------------------------------------------------------------------------------------
# Kernels (float64 numpy, kernel[row][col]; BasicSR conventions: x along columns, y along rows)


def mesh_grid(kernel_size: int) -> np.ndarray:
    """k×k×2 grid of (x, y) offsets from the centre, ``ax = arange(-k//2 + 1, k//2 + 1)``."""
    ax = np.arange(-kernel_size // 2 + 1.0, kernel_size // 2 + 1.0)
    xx, yy = np.meshgrid(ax, ax)
    return np.stack([xx, yy], axis=-1)


def sigma_matrix2(sig_x: float, sig_y: float, theta: float) -> np.ndarray:
    """Covariance R·diag(σx², σy²)·Rᵀ of an oriented Gaussian (θ in radians)."""
    d = np.array([[sig_x ** 2, 0.0], [0.0, sig_y ** 2]])
    r = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    return r @ d @ r.T


def _mahalanobis(kernel_size: int, sig_x: float, sig_y: float, theta: float, isotropic: bool) -> np.ndarray:
    """dᵀΣ⁻¹d at every grid offset d."""
    sigma = np.array([[sig_x ** 2, 0.0], [0.0, sig_x ** 2]]) if isotropic else sigma_matrix2(sig_x, sig_y, theta)
    inv = np.linalg.inv(sigma)
    grid = mesh_grid(kernel_size)
    return np.sum(np.dot(grid, inv) * grid, axis=2)


def bivariate_gaussian(kernel_size: int, sig_x: float, sig_y: float, theta: float, isotropic: bool = True) -> np.ndarray:
    """exp(−½·dᵀΣ⁻¹d), normalised to sum 1."""
    k = np.exp(-0.5 * _mahalanobis(kernel_size, sig_x, sig_y, theta, isotropic))
    return k / np.sum(k)


def bivariate_generalized_gaussian(kernel_size: int, sig_x: float, sig_y: float, theta: float, beta: float,
                                   isotropic: bool = True) -> np.ndarray:
    """exp(−½·(dᵀΣ⁻¹d)^β), normalised (Liu et al., "Estimating generalized Gaussian blur kernels", 2020)."""
    k = np.exp(-0.5 * np.power(_mahalanobis(kernel_size, sig_x, sig_y, theta, isotropic), beta))
    return k / np.sum(k)


def bivariate_plateau(kernel_size: int, sig_x: float, sig_y: float, theta: float, beta: float,
                      isotropic: bool = True) -> np.ndarray:
    """1 / ((dᵀΣ⁻¹d)^β + 1), normalised (a flat-topped kernel)."""
    k = np.reciprocal(np.power(_mahalanobis(kernel_size, sig_x, sig_y, theta, isotropic), beta) + 1)
    return k / np.sum(k)


def circular_lowpass_kernel(cutoff: float, kernel_size: int, pad_to: int = 0) -> np.ndarray:
    """2-D sinc: the ideal low-pass of radius ``cutoff`` (rad/pixel), ωc·J1(ωc·r)/(2π·r) with the
    limit ωc²/(4π) at r = 0, normalised; zero-padded to ``pad_to``×``pad_to`` when larger."""
    from scipy import special

    if kernel_size % 2 != 1:
        raise ValueError("circular_lowpass_kernel: kernel_size must be odd")
    c = (kernel_size - 1) / 2
    yy, xx = np.meshgrid(np.arange(kernel_size), np.arange(kernel_size), indexing="ij")
    r = np.sqrt((xx - c) ** 2 + (yy - c) ** 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = cutoff * special.j1(cutoff * r) / (2 * np.pi * r)
    k[int(c), int(c)] = cutoff ** 2 / (4 * np.pi)
    k = k / np.sum(k)
    if pad_to > kernel_size:
        p = (pad_to - kernel_size) // 2
        k = np.pad(k, ((p, p), (p, p)))
    return k


def motion_kernel(kernel_size: int, length: float, angle: float) -> np.ndarray:
    """A straight motion streak of ``length`` pixels at ``angle`` (radians, from +x towards +y),
    centred, rasterised by 16× supersampled points along the segment, normalised."""
    k = np.zeros((kernel_size, kernel_size))
    c = kernel_size // 2
    n = max(2, int(math.ceil(length * 16)))
    t = np.linspace(-length / 2, length / 2, n)
    x, y = c + t * math.cos(angle), c + t * math.sin(angle)
    # bilinear splat of each point
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = x0 + dx, y0 + dy
        ok = (xi >= 0) & (xi < kernel_size) & (yi >= 0) & (yi < kernel_size)
        np.add.at(k, (yi[ok], xi[ok]), w[ok])
    return k / k.sum()


# ---------------------------------------------------------------------------------------------
# Filtering


def filter2D(img: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """BasicSR's ``filter2D``: cross-correlation of B×C×H×W ``img`` with ``kernel`` (1×k×k: one
    kernel for all; B×k×k: kernel i on every channel of image i), k odd, reflect-101 border."""
    k = kernel.size(-1)
    b, c, h, w = img.shape
    if k % 2 != 1:
        raise ValueError("filter2D: kernel size must be odd")
    pad = k // 2
    img = F.pad(img, (pad, pad, pad, pad), mode="reflect")
    ph, pw = img.shape[-2:]
    kernel = kernel.to(img.dtype)
    if kernel.size(0) == 1:
        out = F.conv2d(img.view(b * c, 1, ph, pw), kernel.view(1, 1, k, k))
        return out.view(b, c, h, w)
    weight = kernel.view(b, 1, k, k).repeat(1, c, 1, 1).view(b * c, 1, k, k)
    return F.conv2d(img.view(1, b * c, ph, pw), weight, groups=b * c).view(b, c, h, w)


def gaussian_kernel_1d(size: int, sigma: float = 0.0) -> np.ndarray:
    """OpenCV's ``getGaussianKernel``: σ ≤ 0 → 0.3·((size − 1)·0.5 − 1) + 0.8; normalised."""
    if sigma <= 0:
        sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    x = np.arange(size) - (size - 1) / 2
    g = np.exp(-(x ** 2) / (2 * sigma ** 2))
    return g / g.sum()


class USMSharp(torch.nn.Module):
    """Unsharp masking of the target (Real-ESRGAN's ``gt_usm``; BasicSR ``USMSharp``): blur with a
    Gaussian of size ``radius`` (made odd; OpenCV's σ rule), residual r = x − blur, mask =
    |r|·255 > threshold, softened by the same blur; out = soft·clip(x + weight·r, 0, 1) + (1 − soft)·x."""

    def __init__(self, radius: int = 50, sigma: float = 0.0):
        super().__init__()
        if radius % 2 == 0:
            radius += 1
        g = gaussian_kernel_1d(radius, sigma)
        kernel = torch.from_numpy(np.outer(g, g)).float().unsqueeze(0)
        self.register_buffer("kernel", kernel)

    def forward(self, img: torch.Tensor, weight: float = 0.5, threshold: float = 10) -> torch.Tensor:
        squeeze = img.dim() == 3
        img = img[None] if squeeze else img
        blur = filter2D(img, self.kernel)
        residual = img - blur
        mask = (torch.abs(residual) * 255 > threshold).to(img.dtype)
        soft_mask = filter2D(mask, self.kernel)
        sharp = torch.clamp(img + weight * residual, 0, 1)
        out = soft_mask * sharp + (1 - soft_mask) * img
        return out[0] if squeeze else out


# ---------------------------------------------------------------------------------------------
# Colour


def to_gray(x: torch.Tensor) -> torch.Tensor:
    """ITU-R BT.601 luma 0.299R + 0.587G + 0.114B (1×H×W) of C×H×W or B×C×H×W RGB."""
    if x.shape[-3] == 1:
        return x
    w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x * w).sum(dim=-3, keepdim=True)


_XYZ_FROM_RGB = torch.tensor([[0.412453, 0.357580, 0.180423],
                              [0.212671, 0.715160, 0.072169],
                              [0.019334, 0.119193, 0.950227]], dtype=torch.float64)
_WHITE_D65 = (0.95047, 1.0, 1.08883)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB (…×3×H×W, [0, 1]) → CIE L*a*b* (D65, 2°), as ``skimage.color.rgb2lab``: sRGB decoding,
    XYZ, f(t) = t^(1/3) above (6/29)³ else t/(3·(6/29)²) + 4/29. Differentiable everywhere."""
    from utils.noise import srgb_to_linear

    lin = srgb_to_linear(rgb.clamp(0, 1))
    m = _XYZ_FROM_RGB.to(rgb.device, rgb.dtype)
    xyz = torch.einsum("ij,...jhw->...ihw", m, lin)
    white = torch.tensor(_WHITE_D65, dtype=rgb.dtype, device=rgb.device).view(3, 1, 1)
    t = xyz / white
    eps = (6 / 29) ** 3
    f = torch.where(t > eps, t.clamp(min=eps) ** (1 / 3), t / (3 * (6 / 29) ** 2) + 4 / 29)
    fx, fy, fz = f.unbind(-3)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=-3)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_lab` (unclamped sRGB)."""
    from utils.noise import linear_to_srgb

    L, a, b = lab.unbind(-3)
    fy = (L + 16) / 116
    f = torch.stack([fy + a / 500, fy, fy - b / 200], dim=-3)
    d = 6 / 29
    t = torch.where(f > d, f ** 3, 3 * d * d * (f - 4 / 29))
    white = torch.tensor(_WHITE_D65, dtype=lab.dtype, device=lab.device).view(3, 1, 1)
    xyz = t * white
    m = torch.linalg.inv(_XYZ_FROM_RGB).to(lab.device, lab.dtype)
    lin = torch.einsum("ij,...jhw->...ihw", m, xyz)
    return torch.where(lin <= 0.0031308, 12.92 * lin, linear_to_srgb(lin.clamp(min=0)))


# ---------------------------------------------------------------------------------------------
# JPEG


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """C×H×W float → H×W×C uint8: clamp to [0, 1], ×255, round half to even (``utils.image_io``)."""
    from utils.image_io import quantize_levels

    return quantize_levels(x.detach().cpu()).numpy().astype(np.uint8).transpose(1, 2, 0)


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG round trip through PIL's libjpeg (default 4:2:0 chroma subsampling for RGB) of the
    clamped, rounded 8-bit image; returns float32 C×H×W in [0, 1]. 1-channel images encode as gray."""
    from PIL import Image

    arr = to_uint8(x)
    img = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr, mode="L" if arr.shape[2] == 1 else "RGB")
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    out = np.array(Image.open(buf).convert("L" if arr.shape[2] == 1 else "RGB"))
    out = out[:, :, None] if out.ndim == 2 else out
    return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1))).float().div(255).to(x.device)


# ---------------------------------------------------------------------------------------------
# Draws (all from the sample's torch.Generator)


def uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return float(lo + (hi - lo) * torch.rand((), generator=g, dtype=torch.float64).item())


def bernoulli(g: torch.Generator, p: float) -> bool:
    """True with probability p (one uniform draw, always taken, so later draws do not shift)."""
    return bool(torch.rand((), generator=g, dtype=torch.float64).item() < p)


def choice(g: torch.Generator, options: Sequence, probs: Sequence[float] | None = None):
    u = torch.rand((), generator=g, dtype=torch.float64).item()
    probs = [1.0 / len(options)] * len(options) if probs is None else list(probs)
    total = sum(probs)
    acc = 0.0
    for option, p in zip(options, probs):
        acc += p / total
        if u < acc:
            return option
    return options[-1]


def _range(value, name: str) -> tuple[float, float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value), float(value)
    if isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value) \
            and value[0] <= value[1]:
        return float(value[0]), float(value[1])
    raise ConfigError(f"{name} must be a number or a [low, high] range, got {value!r}")


def _prob(value, name: str) -> float:
    if not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ConfigError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def _probs(values, n: int, name: str) -> list[float]:
    if not isinstance(values, Sequence) or len(values) != n or any(v < 0 for v in values) or sum(values) <= 0:
        raise ConfigError(f"{name} must be {n} non-negative weights, got {values!r}")
    return [float(v) for v in values]


# ---------------------------------------------------------------------------------------------
# Ops


class Op:
    """One degradation: ``draw`` its parameters, ``apply`` them. ``p``: probability of applying."""

    name = ""
    options: tuple[str, ...] = ()

    def __init__(self, spec: Mapping, where: str):
        unknown = [k for k in spec if k not in ("op", "p", *self.options)]
        if unknown:
            from utils.registry import unknown_name_message

            raise ConfigError(f"{where}: op {self.name} has no option {unknown[0]!r} "
                              f"(options: p, {', '.join(self.options)})"
                              + (f"; {unknown_name_message('option', unknown[0], self.options)}" if self.options else ""))
        self.p = _prob(spec.get("p", 1.0), f"{where}.p")
        self.where = where

    def draw(self, g: torch.Generator, size: tuple[int, int], base: tuple[int, int]) -> dict:
        """``{"op": name, "applied": bool, ...}``; ``size``: the current H×W, ``base``: the pipeline
        input's H×W. One Bernoulli draw always comes first."""
        applied = bernoulli(g, self.p)
        out = {"op": self.name, "applied": applied}
        if applied:
            out.update(self.draw_params(g, size, base))
        return out

    def draw_params(self, g, size, base) -> dict:
        return {}

    def out_size(self, params: dict, size: tuple[int, int]) -> tuple[int, int]:
        return tuple(params.get("out_size", size)) if params["applied"] else size

    def apply(self, x: torch.Tensor, params: dict, g: torch.Generator) -> torch.Tensor:
        raise NotImplementedError


KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso", "sinc",
                "motion")


def make_kernel(params: Mapping) -> np.ndarray:
    """The kernel a blur draw describes (``type``, ``size`` and the type's parameters)."""
    t, k = params["type"], params["size"]
    if t in ("iso", "aniso"):
        return bivariate_gaussian(k, params["sig_x"], params["sig_y"], params["theta"], t == "iso")
    if t.startswith("generalized"):
        return bivariate_generalized_gaussian(k, params["sig_x"], params["sig_y"], params["theta"], params["beta"],
                                              t.endswith("iso") and not t.endswith("aniso"))
    if t.startswith("plateau"):
        return bivariate_plateau(k, params["sig_x"], params["sig_y"], params["theta"], params["beta"],
                                 not t.endswith("aniso"))
    if t == "sinc":
        return circular_lowpass_kernel(params["cutoff"], k, pad_to=params.get("pad_to", 0))
    if t == "motion":
        return motion_kernel(k, params["length"], params["angle"])
    raise ValueError(f"unknown kernel type {t!r}")


class Blur(Op):
    """Blur by a random kernel (Real-ESRGAN's ``random_mixed_kernels`` + sinc, or motion)."""

    name = "blur"
    options = ("kernel_list", "kernel_prob", "kernel_size", "sigma", "betag", "betap", "sinc_prob", "sinc_cutoff",
               "rotation", "motion_length")

    def __init__(self, spec, where):
        super().__init__(spec, where)
        self.kernel_list = list(spec.get("kernel_list", ["iso"]))
        bad = [t for t in self.kernel_list if t not in KERNEL_TYPES or t == "sinc"]
        if bad:
            raise ConfigError(f"{where}.kernel_list: unknown kernel type {bad[0]!r} (one of "
                              f"{', '.join(t for t in KERNEL_TYPES if t != 'sinc')}; sinc via sinc_prob)")
        self.kernel_prob = _probs(spec.get("kernel_prob", [1.0] * len(self.kernel_list)), len(self.kernel_list),
                                  f"{where}.kernel_prob")
        self.kernel_size = tuple(int(v) for v in _range(spec.get("kernel_size", [7, 21]), f"{where}.kernel_size"))
        if self.kernel_size[0] % 2 == 0 or self.kernel_size[1] % 2 == 0:
            raise ConfigError(f"{where}.kernel_size must be odd, got {list(self.kernel_size)}")
        self.sigma = _range(spec.get("sigma", [0.2, 3.0]), f"{where}.sigma")
        self.betag = _range(spec.get("betag", [0.5, 4.0]), f"{where}.betag")
        self.betap = _range(spec.get("betap", [1.0, 2.0]), f"{where}.betap")
        self.sinc_prob = _prob(spec.get("sinc_prob", 0.0), f"{where}.sinc_prob")
        cutoff = spec.get("sinc_cutoff")  # None: Real-ESRGAN's rule, [π/3, π] below size 13 else [π/5, π]
        self.sinc_cutoff = None if cutoff is None else _range(cutoff, f"{where}.sinc_cutoff")
        self.rotation = _range(spec.get("rotation", [-math.pi, math.pi]), f"{where}.rotation")
        self.motion_length = _range(spec.get("motion_length", [3, 15]), f"{where}.motion_length")

    def draw_params(self, g, size, base):
        sizes = list(range(self.kernel_size[0], self.kernel_size[1] + 1, 2))
        k = int(choice(g, sizes))
        if bernoulli(g, self.sinc_prob):  # Real-ESRGAN: a wider cutoff range for small kernels
            if self.sinc_cutoff is not None:
                cutoff = uniform(g, *self.sinc_cutoff)
            else:
                cutoff = uniform(g, math.pi / 3, math.pi) if k < 13 else uniform(g, math.pi / 5, math.pi)
            return {"type": "sinc", "size": k, "cutoff": cutoff}
        t = choice(g, self.kernel_list, self.kernel_prob)
        if t == "motion":
            length = uniform(g, *self.motion_length)
            return {"type": t, "size": k, "length": min(length, k - 1.0), "angle": uniform(g, 0.0, math.pi)}
        out = {"type": t, "size": k, "sig_x": uniform(g, *self.sigma)}
        if t.endswith("aniso"):
            out["sig_y"], out["theta"] = uniform(g, *self.sigma), uniform(g, *self.rotation)
        else:
            out["sig_y"], out["theta"] = out["sig_x"], 0.0
        if t.startswith("generalized"):  # BasicSR: β < 1 half the time, else in [1, β_max]
            lo, hi = self.betag
            out["beta"] = uniform(g, lo, 1.0) if bernoulli(g, 0.5) and lo < 1 else uniform(g, min(1.0, hi), hi)
        elif t.startswith("plateau"):
            lo, hi = self.betap
            out["beta"] = uniform(g, lo, 1.0) if bernoulli(g, 0.5) and lo < 1 else uniform(g, min(max(1.0, lo), hi), hi)
        return out

    def apply(self, x, params, g):
        kernel = torch.from_numpy(make_kernel(params)).to(x.device, torch.float32)
        return filter2D(x[None], kernel[None])[0]


class SVBlur(Op):
    """Spatially varying blur by a PSF field of the lab (``psf.svpsf.PSFSimulator`` options; the
    field is simulated once and rendered at each image size with ``utils.sv_renderer.SVRenderer``)."""

    name = "sv_blur"
    options = ("psf", "boundary")

    def __init__(self, spec, where):
        super().__init__(spec, where)
        self.psf = dict(spec.get("psf") or {"psf_type": "gaussian", "grid_shape": [3, 3], "psf_size": 15,
                                            "sensor_res": [128, 128], "sigma_px": 1.0})
        self.boundary = spec.get("boundary", "reflect")
        self._field = None
        self._renderers: dict = {}

    def apply(self, x, params, g):
        from psf.svpsf import PSFSimulator
        from utils.sv_renderer import SVRenderer

        if self._field is None:
            self._field = PSFSimulator(**self.psf).simulate()
        hw = tuple(x.shape[-2:])
        if hw not in self._renderers:
            self._renderers[hw] = SVRenderer(self._field, hw, self.boundary)
        with torch.no_grad():
            return self._renderers[hw](x[None].float())[0]


RESIZE_MODES = ("area", "bilinear", "bicubic", "matlab")


def resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """C×H×W → C×size. ``matlab``: ``utils.imresize`` (antialiased bicubic, scale = size ratio)."""
    h, w = x.shape[-2:]
    if (h, w) == tuple(size):
        return x
    if mode == "matlab":
        from utils.imresize import imresize

        out = imresize(x, size[0] / h)
        if tuple(out.shape[-2:]) != tuple(size):  # non-uniform ratio: resize each axis on its own
            from utils.imresize import resize_matrix

            rows = resize_matrix(h, size[0], size[0] / h).to(x.device)
            cols = resize_matrix(w, size[1], size[1] / w).to(x.device)
            out = torch.matmul(torch.matmul(rows, x.double()), cols.T).to(x.dtype)
        return out
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    return F.interpolate(x[None], size=tuple(size), mode=mode, **kwargs)[0]


class Resize(Op):
    """Random up/down/keep resize (Real-ESRGAN) or a fixed ``to_scale`` of the pipeline input."""

    name = "resize"
    options = ("resize_prob", "range", "modes", "mode_prob", "to_scale", "base_scale")

    def __init__(self, spec, where):
        super().__init__(spec, where)
        self.resize_prob = _probs(spec.get("resize_prob", [0.2, 0.7, 0.1]), 3, f"{where}.resize_prob")
        self.range = _range(spec.get("range", [0.15, 1.5]), f"{where}.range")
        self.modes = list(spec.get("modes", ["area", "bilinear", "bicubic"]))
        bad = [m for m in self.modes if m not in RESIZE_MODES]
        if bad or not self.modes:
            raise ConfigError(f"{where}.modes: one or more of {', '.join(RESIZE_MODES)}, got {self.modes!r}")
        self.mode_prob = _probs(spec.get("mode_prob", [1.0] * len(self.modes)), len(self.modes), f"{where}.mode_prob")
        self.to_scale = spec.get("to_scale")
        if self.to_scale is not None and not (isinstance(self.to_scale, (int, float)) and self.to_scale > 0):
            raise ConfigError(f"{where}.to_scale must be a positive number, got {self.to_scale!r}")
        # base_scale: the random factor applies to base·base_scale (Real-ESRGAN's second stage:
        # ori / scale · factor), not to the current size
        self.base_scale = spec.get("base_scale")

    def draw_params(self, g, size, base):
        mode = choice(g, self.modes, self.mode_prob)
        if self.to_scale is not None:
            s = float(self.to_scale)
            return {"mode": mode, "out_size": [int(base[0] * s), int(base[1] * s)]}
        direction = choice(g, ["up", "down", "keep"], self.resize_prob)
        s = uniform(g, 1.0, self.range[1]) if direction == "up" else (
            uniform(g, self.range[0], 1.0) if direction == "down" else 1.0)
        ref = size if self.base_scale is None else (base[0] * self.base_scale, base[1] * self.base_scale)
        return {"mode": mode, "direction": direction, "factor": s,
                "out_size": [max(1, int(ref[0] * s)), max(1, int(ref[1] * s))]}

    def apply(self, x, params, g):
        return resize(x, params["out_size"], params["mode"])


class Noise(Op):
    """Gaussian / Poisson / Poisson–Gaussian noise, colour or gray (``kinds`` with ``kind_prob``)."""

    name = "noise"
    options = ("kinds", "kind_prob", "sigma", "poisson_scale", "photons", "read_noise", "gray_prob", "clip")

    def __init__(self, spec, where):
        super().__init__(spec, where)
        self.kinds = list(spec.get("kinds", ["gaussian"]))
        bad = [k for k in self.kinds if k not in ("gaussian", "poisson", "poisson_gaussian")]
        if bad or not self.kinds:
            raise ConfigError(f"{where}.kinds: gaussian, poisson and/or poisson_gaussian, got {self.kinds!r}")
        self.kind_prob = _probs(spec.get("kind_prob", [1.0] * len(self.kinds)), len(self.kinds), f"{where}.kind_prob")
        self.sigma = _range(spec.get("sigma", [1.0, 30.0]), f"{where}.sigma")
        self.poisson_scale = _range(spec.get("poisson_scale", [0.05, 3.0]), f"{where}.poisson_scale")
        self.photons = _range(spec.get("photons", [100.0, 1000.0]), f"{where}.photons")
        self.read_noise = _range(spec.get("read_noise", [0.0, 5.0]), f"{where}.read_noise")
        self.gray_prob = _prob(spec.get("gray_prob", 0.0), f"{where}.gray_prob")
        self.clip = bool(spec.get("clip", True))

    def draw_params(self, g, size, base):
        kind = choice(g, self.kinds, self.kind_prob)
        out = {"kind": kind, "gray": bernoulli(g, self.gray_prob)}
        if kind == "gaussian":
            out["sigma"] = uniform(g, *self.sigma)  # in 8-bit levels
        elif kind == "poisson":
            out["scale"] = uniform(g, *self.poisson_scale)
        else:
            out["photons"], out["read_noise"] = uniform(g, *self.photons), uniform(g, *self.read_noise)
        return out

    def apply(self, x, params, g):
        c, h, w = x.shape
        shape = (1 if params["gray"] else c, h, w)
        if params["kind"] == "gaussian":
            noise = torch.randn(shape, generator=g).to(x) * (params["sigma"] / 255.0)
        elif params["kind"] == "poisson":
            src = to_gray(x) if params["gray"] else x
            img = torch.clamp((src * 255.0).round(), 0, 255) / 255.0
            vals = 2 ** math.ceil(math.log2(max(len(torch.unique(img)), 1)))
            noise = (torch.poisson((img * vals).double().cpu(), generator=g).to(x) / vals - img) * params["scale"]
        else:
            from utils.noise import linear_to_srgb, poisson_gaussian_noise, srgb_to_linear

            src = to_gray(x) if params["gray"] else x
            noisy = poisson_gaussian_noise(srgb_to_linear(src.clamp(0, 1)), params["photons"], params["read_noise"], g)
            noise = linear_to_srgb(noisy.to(x).clamp(0, None)) - src.clamp(0, 1)
        out = x + noise.expand(c, h, w)
        return out.clamp(0, 1) if self.clip else out


class JPEG(Op):
    name = "jpeg"
    options = ("quality",)

    def __init__(self, spec, where):
        super().__init__(spec, where)
        self.quality = _range(spec.get("quality", [30, 95]), f"{where}.quality")
        if not 1 <= self.quality[0] <= self.quality[1] <= 100:
            raise ConfigError(f"{where}.quality must lie in [1, 100], got {list(self.quality)}")

    def draw_params(self, g, size, base):
        lo, hi = int(self.quality[0]), int(self.quality[1])
        return {"quality": lo + int(torch.randint(0, hi - lo + 1, (), generator=g).item())}

    def apply(self, x, params, g):
        return jpeg(x, params["quality"])


class Grayscale(Op):
    name = "grayscale"

    def apply(self, x, params, g):
        return to_gray(x).expand_as(x).clone()


class DynamicRange(Op):
    name = "dynamic_range"
    options = ("black", "white", "gamma")

    def __init__(self, spec, where):
        super().__init__(spec, where)
        self.black = _range(spec.get("black", [0.0, 0.1]), f"{where}.black")
        self.white = _range(spec.get("white", [0.75, 1.0]), f"{where}.white")
        self.gamma = _range(spec.get("gamma", [0.45, 1.0]), f"{where}.gamma")

    def draw_params(self, g, size, base):
        return {"black": uniform(g, *self.black), "white": uniform(g, *self.white), "gamma": uniform(g, *self.gamma)}

    def apply(self, x, params, g):
        b, w = params["black"], params["white"]
        return b + (w - b) * x.clamp(0, 1) ** params["gamma"]


class Quantize(Op):
    name = "quantize"

    def apply(self, x, params, g):
        from utils.image_io import quantize

        return quantize(x)


class OneOf(Op):
    """One of ``branches`` (each a list of op specs), chosen with ``probs``."""

    name = "one_of"
    options = ("branches", "probs")

    def __init__(self, spec, where):
        super().__init__(spec, where)
        branches = spec.get("branches")
        if not isinstance(branches, Sequence) or not branches:
            raise ConfigError(f"{where}.branches must be a list of op lists")
        self.branches = [build_ops(b, f"{where}.branches[{i}]") for i, b in enumerate(branches)]
        self.probs = _probs(spec.get("probs", [1.0] * len(self.branches)), len(self.branches), f"{where}.probs")

    def draw_params(self, g, size, base):
        i = choice(g, list(range(len(self.branches))), self.probs)
        steps = []
        for op in self.branches[i]:
            d = op.draw(g, size, base)
            size = op.out_size(d, size)
            steps.append(d)
        return {"branch": i, "steps": steps, "out_size": list(size)}

    def apply(self, x, params, g):
        for op, d in zip(self.branches[params["branch"]], params["steps"]):
            if d["applied"]:
                x = op.apply(x, d, g)
        return x


OPS = {cls.name: cls for cls in (Blur, SVBlur, Resize, Noise, JPEG, Grayscale, DynamicRange, Quantize, OneOf)}


def build_ops(specs, where: str = "degradations") -> list[Op]:
    if not isinstance(specs, Sequence) or isinstance(specs, (str, bytes)):
        raise ConfigError(f"{where} must be a list of ops like [{{op: blur, p: 0.5}}, {{op: jpeg, quality: [30, 95]}}]")
    ops = []
    for i, spec in enumerate(specs):
        if not isinstance(spec, Mapping) or "op" not in spec:
            raise ConfigError(f"{where}[{i}] must be a mapping with an 'op' ({', '.join(OPS)})")
        if spec["op"] not in OPS:
            from utils.registry import unknown_name_message

            raise ConfigError(f"{where}[{i}]: " + unknown_name_message("degradation op", spec["op"], list(OPS)))
        ops.append(OPS[spec["op"]](spec, f"{where}[{i}]"))
    return ops


class DegradationPipeline:
    """Ops in order (module docstring). ``pipeline(x, generator) -> (lq, params)``; ``draw`` alone
    gives the parameter record (what the 10,000-draw frequency checks use)."""

    def __init__(self, specs, where: str = "degradations"):
        if isinstance(specs, Mapping) and "preset" in specs:
            specs = preset(specs, where)
        self.specs = specs
        self.ops = build_ops(specs, where)

    def draw(self, g: torch.Generator, size: tuple[int, int]) -> list[dict]:
        record, cur = [], tuple(size)
        for op in self.ops:
            d = op.draw(g, cur, tuple(size))
            cur = op.out_size(d, cur)
            record.append(d)
        return record

    def apply(self, x: torch.Tensor, record: list[dict], g: torch.Generator) -> torch.Tensor:
        for op, d in zip(self.ops, record):
            if d["applied"]:
                x = op.apply(x, d, g)
        return x

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, list[dict]]:
        record = self.draw(g, tuple(x.shape[-2:]))
        return self.apply(x, record, g), record


def record_json(record: list[dict]) -> str:
    return json.dumps(record, separators=(",", ":"))


# ---------------------------------------------------------------------------------------------
# Presets

REALESRGAN_KERNELS = ["iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso"]
REALESRGAN_KERNEL_PROB = [0.45, 0.25, 0.12, 0.03, 0.12, 0.03]


def realesrgan_preset(scale: int = 4) -> list[dict]:
    """Real-ESRGAN's second-order degradation (``options/train_realesrgan_x4plus.yml``,
    ``realesrgan/models/realesrgan_model.py``) as op specs; lq = gt / ``scale``, rounded to 8 bits."""
    blur1 = {"op": "blur", "p": 1.0, "kernel_list": REALESRGAN_KERNELS, "kernel_prob": REALESRGAN_KERNEL_PROB,
             "kernel_size": [7, 21], "sigma": [0.2, 3.0], "betag": [0.5, 4.0], "betap": [1.0, 2.0], "sinc_prob": 0.1}
    blur2 = {**blur1, "p": 0.8, "sigma": [0.2, 1.5]}
    final_resize = {"op": "resize", "to_scale": 1.0 / scale, "modes": ["area", "bilinear", "bicubic"]}
    final_sinc = {"op": "blur", "p": 0.8, "kernel_list": ["iso"], "kernel_size": [7, 21], "sinc_prob": 1.0,
                  "sinc_cutoff": [math.pi / 3, math.pi]}
    jpeg_op = {"op": "jpeg", "quality": [30, 95]}
    return [
        blur1,
        {"op": "resize", "resize_prob": [0.2, 0.7, 0.1], "range": [0.15, 1.5], "modes": ["area", "bilinear", "bicubic"]},
        {"op": "noise", "kinds": ["gaussian", "poisson"], "kind_prob": [0.5, 0.5], "sigma": [1, 30],
         "poisson_scale": [0.05, 3.0], "gray_prob": 0.4},
        jpeg_op,
        blur2,
        {"op": "resize", "resize_prob": [0.3, 0.4, 0.3], "range": [0.3, 1.2], "modes": ["area", "bilinear", "bicubic"],
         "base_scale": 1.0 / scale},
        {"op": "noise", "kinds": ["gaussian", "poisson"], "kind_prob": [0.5, 0.5], "sigma": [1, 25],
         "poisson_scale": [0.05, 2.5], "gray_prob": 0.4},
        {"op": "one_of", "probs": [0.5, 0.5], "branches": [[final_resize, final_sinc, jpeg_op],
                                                           [jpeg_op, final_resize, final_sinc]]},
        {"op": "quantize"},
    ]


def preset(spec: Mapping, where: str) -> list[dict]:
    name = spec["preset"]
    if name == "realesrgan":
        extra = [k for k in spec if k not in ("preset", "scale")]
        if extra:
            raise ConfigError(f"{where}: preset realesrgan takes only scale, got {extra}")
        return realesrgan_preset(int(spec.get("scale", 4)))
    raise ConfigError(f"{where}.preset: unknown preset {name!r} (one of: realesrgan)")
