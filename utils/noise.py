"""Sensor noise, the sRGB tone curve and quantisation, seeded per sample.

* Gaussian: ``y = x + σ·n``, n ~ N(0, 1), in whatever space x is (sRGB for the usual AWGN).
* Poisson–Gaussian in linear light (Foi et al., "Practical Poissonian-Gaussian noise modeling
  and fitting for single-image raw-data", IEEE TIP 17(10), 2008, eq. 1): a pixel of linear
  irradiance L (1 = white) collects e ~ Poisson(L·photons) photo-electrons, plus read noise
  N(0, read_noise²) electrons; the measurement (e + n)/photons has mean L and variance
  ``L/photons + (read_noise/photons)²``.
* sRGB <-> linear: the IEC 61966-2-1:1999 transfer curve (linear segment below 0.04045 /
  0.0031308); values outside [0, 1] follow the curve's linear segment / power law unclipped,
  so noisy negatives survive the round trip.
* Quantisation to 8/16 bits: clip to [0, 1], round to the nearest level.

Every random draw takes a ``torch.Generator``; draws happen on the generator's device and
move to the image's, so a seed gives the same noise on CPU and GPU.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

NOISE_KINDS = ("none", "gaussian", "poisson_gaussian")


# -- tone curve --------------------------------------------------------------------------------
def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    """IEC 61966-2-1 sRGB decoding: x/12.92 below 0.04045, else ((x+0.055)/1.055)^2.4."""
    return torch.where(x <= 0.04045, x / 12.92, ((x.clamp(min=0.04045) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    """IEC 61966-2-1 sRGB encoding: 12.92·x below 0.0031308, else 1.055·x^(1/2.4) − 0.055."""
    return torch.where(x <= 0.0031308, 12.92 * x, 1.055 * x.clamp(min=0.0031308) ** (1 / 2.4) - 0.055)


# -- draws ---------------------------------------------------------------------------------------
def _randn(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else like.device
    return torch.randn(like.shape, generator=generator, device=device, dtype=like.dtype).to(like.device)


def gaussian_noise(x: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """``x + sigma·N(0, 1)`` (no clipping)."""
    return x + sigma * _randn(x, generator) if sigma > 0 else x


def poisson_gaussian_noise(linear: torch.Tensor, photons: float, read_noise: float = 0.0,
                           generator: torch.Generator | None = None) -> torch.Tensor:
    """Shot + read noise on linear irradiance (see module doc); returns linear light, unclipped.

    Negative irradiance (ringing of a PSF with negative lobes) collects no photons.
    """
    if photons <= 0:
        raise ValueError(f"photons must be > 0, got {photons}")
    device = generator.device if generator is not None else linear.device
    rate = (linear.detach().to(device, torch.float64).clamp(min=0) * photons)
    electrons = torch.poisson(rate, generator=generator)
    if read_noise > 0:
        electrons = electrons + read_noise * torch.randn(rate.shape, generator=generator, device=device, dtype=torch.float64)
    measured = (electrons / photons).to(linear.device, linear.dtype)
    # Keep the graph: the noise is an additive offset w.r.t. the clean signal.
    return linear + (measured - linear.detach())


# -- a noise model ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class NoiseModel:
    """One concrete noise setting.

    ``kind``: ``none`` | ``gaussian`` (``sigma``, in [0, 1] sRGB units) | ``poisson_gaussian``
    (``photons`` electrons at white, ``read_noise`` electrons rms, in linear light).
    """

    kind: str = "none"
    sigma: float = 0.0
    photons: float = 0.0
    read_noise: float = 0.0

    def __post_init__(self):
        if self.kind not in NOISE_KINDS:
            raise ValueError(f"noise kind must be one of {NOISE_KINDS}, got {self.kind!r}")
        if self.sigma < 0 or self.read_noise < 0:
            raise ValueError("sigma and read_noise must be >= 0")
        if self.kind == "poisson_gaussian" and not self.photons > 0:
            raise ValueError(f"poisson_gaussian noise needs photons > 0, got {self.photons}")

    def __call__(self, srgb: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Noisy version of an sRGB image (sRGB in, sRGB out, unclipped)."""
        if self.kind == "poisson_gaussian":
            return linear_to_srgb(poisson_gaussian_noise(srgb_to_linear(srgb), self.photons, self.read_noise, generator))
        return gaussian_noise(srgb, self.sigma, generator) if self.kind == "gaussian" else srgb

    def apply_linear(self, linear: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Noisy sRGB image from a linear-light one (shot/read noise before the tone curve,
        Gaussian after it)."""
        if self.kind == "poisson_gaussian":
            return linear_to_srgb(poisson_gaussian_noise(linear, self.photons, self.read_noise, generator))
        return gaussian_noise(linear_to_srgb(linear), self.sigma, generator) if self.kind == "gaussian" else linear_to_srgb(linear)

    def as_dict(self) -> dict:
        return asdict(self)


def _uniform(lo: float, hi: float, generator: torch.Generator | None) -> float:
    u = torch.rand((), generator=generator, dtype=torch.float64, device=generator.device if generator is not None else None).item()
    return lo + (hi - lo) * u


def sample_noise_model(kind: str = "none", sigma=(0.0, 0.0), photons=(1000.0, 1000.0), read_noise=(0.0, 0.0),
                       generator: torch.Generator | None = None) -> NoiseModel:
    """Draw one ``NoiseModel``: ``sigma`` and ``read_noise`` uniform in their (lo, hi) ranges,
    ``photons`` log-uniform (light levels span decades). A single number is a fixed value."""
    rng = lambda v: (float(v), float(v)) if isinstance(v, (int, float)) else (float(v[0]), float(v[-1]))  # noqa: E731
    if kind == "gaussian":
        return NoiseModel(kind, sigma=_uniform(*rng(sigma), generator))
    if kind == "poisson_gaussian":
        lo, hi = rng(photons)
        if not 0 < lo <= hi:
            raise ValueError(f"photons range must satisfy 0 < lo <= hi, got {photons}")
        return NoiseModel(kind, photons=math.exp(_uniform(math.log(lo), math.log(hi), generator)),
                          read_noise=_uniform(*rng(read_noise), generator))
    return NoiseModel(kind)
