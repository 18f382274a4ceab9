"""Incoherent wave-optics PSFs of a circular pupil, integrated over the sensor pixels.

Fraunhofer imaging (Goodman, "Introduction to Fourier Optics", 3rd ed., eqs. 6-29/6-30):
the amplitude PSF is the Fourier transform of the pupil function
``P(rho) exp(i 2 pi W(rho))`` (W in waves) evaluated at ``x / (lambda f)``, and the incoherent
PSF is its squared modulus. For a pupil of normalised radius 1 this puts image-plane
coordinate ``x`` against pupil coordinate ``rho`` through ``lambda N`` (N = f-number).

Sampling (cf. Schmidt, "Numerical simulation of optical wave propagation", ch. 3):

* fine image samples at ``dx = pitch / s`` with the integer ``s`` chosen so that
  ``Q = lambda N / dx >= 2`` -- the intensity, band-limited at ``1 / (lambda N)``, is then
  sampled without aliasing;
* an ``L = s * M`` point FFT, so the computed PSF is periodic over ``M`` pixels; ``M`` is chosen
  so the blur (geometric ray displacement + diffraction) never wraps into the ``k x k`` window
  and the pupil gets at least ``min_pupil_samples`` samples across its diameter;
* pixel integration is exact for the band-limited intensity: its spectrum is multiplied by the
  pixel transfer function ``sinc(f p)`` per axis and sampled at pixel centres (the sampling is
  done by folding the spectrum to ``M x M`` and one small inverse FFT).

The sign convention is the one of the forward FFT: a wavefront tilt ``W = a * rho_x`` (waves)
moves the image by ``+2 N lambda a`` along +x (ray aberration = ``2 N lambda dW/drho``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

Wavefront = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (rho_x, rho_y) -> [B, P, P] waves


def next_fast_len(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n (sizes pocketfft/cuFFT handle fastest)."""
    best = None
    p2 = 1
    while p2 < 2 * n:
        p3 = p2
        while p3 < 2 * n:
            p5 = p3
            while p5 < n:
                p5 *= 5
            if best is None or p5 < best:
                best = p5
            p3 *= 3
        p2 *= 2
    return max(best, 1)


@dataclass(frozen=True)
class PupilSampling:
    """How one wavelength is sampled (see module docstring)."""

    wavelength_um: float
    f_number: float
    pixel_pitch_um: float
    psf_size: int
    oversample: int  # s: fine samples per pixel
    period_px: int  # M: the computed PSF repeats every M pixels
    n_fft: int  # L = s * M
    rho_step: float  # pupil sample spacing in normalised pupil radius units

    @property
    def q(self) -> float:
        """Fine-grid sampling factor lambda N / dx (>= 2: Nyquist-sampled intensity)."""
        return self.wavelength_um * self.f_number * self.oversample / self.pixel_pitch_um

    @property
    def pupil_samples(self) -> float:
        """Samples across the pupil diameter."""
        return 2.0 / self.rho_step

    @property
    def half_width(self) -> int:
        """Pupil samples reach +-half_width around the pupil centre."""
        return int(math.floor(1.0 / self.rho_step)) + 1


def plan_sampling(wavelength_nm: float, f_number: float, pixel_pitch_um: float, psf_size: int,
                  max_ray_um: float = 0.0, min_pupil_samples: int = 96) -> PupilSampling:
    """Choose s, M and L for one wavelength.

    ``max_ray_um``: the largest geometric ray displacement from the window centre (blur radius
    plus any shift); it sets the period so nothing wraps into the window and the pupil phase is
    sampled finely enough (period ``M p > 2 max_ray`` is the same condition).
    """
    lam_um = wavelength_nm * 1e-3
    lam_n = lam_um * f_number
    s = max(1, math.ceil(2.0 * pixel_pitch_um / lam_n - 1e-9))
    extent_px = (max_ray_um + 8.0 * lam_n) / pixel_pitch_um  # ray blur + diffraction rings
    m_min = max(
        2 * psf_size,  # replicas of the Airy tails stay at least k/2 from the window
        math.ceil(psf_size / 2 + extent_px) + 1,
        math.ceil(2.0 * max_ray_um / pixel_pitch_um) + 1,
        math.ceil(min_pupil_samples * lam_n / pixel_pitch_um),
    )
    m = next_fast_len(m_min)
    n_fft = s * m
    rho_step = 2.0 * lam_n * s / (n_fft * pixel_pitch_um)  # = 2 / D_p with D_p = M p / (lambda N)
    return PupilSampling(lam_um, f_number, pixel_pitch_um, psf_size, s, m, n_fft, rho_step)


def pupil_grid(plan: PupilSampling, dtype=torch.float64, device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Compact pupil grid centred on the pupil centre: rho_x, rho_y [P, P] and the amplitude.

    The amplitude is a disk with an anti-aliased edge (linear ramp over one sample, ~ the
    fraction of each sample cell inside the aperture), which makes the discrete pupil area and
    hence the Strehl ratio accurate to well below 1 % at ~100 samples across.
    """
    j = plan.half_width
    t = torch.arange(-j, j + 1, dtype=dtype, device=device) * plan.rho_step
    rho_y, rho_x = torch.meshgrid(t, t, indexing="ij")
    rho = torch.hypot(rho_x, rho_y)
    amplitude = ((1.0 - rho) / plan.rho_step + 0.5).clamp(0.0, 1.0)
    return rho_x, rho_y, amplitude


def max_ray_displacement_um(wavefront: Wavefront, f_number: float, wavelength_nm: float, samples: int = 65) -> float:
    """Largest geometric transverse ray aberration ``2 N lambda |grad W|`` over the pupil, in um.

    Transverse ray aberration = (R / r_pupil) dW/drho with R / r_pupil = 2N (Wyant & Creath 1992,
    "Basic wavefront aberration theory for optical metrology"), evaluated on a coarse grid with
    finite differences. ``wavefront`` returns waves at ``wavelength_nm``.
    """
    t = torch.linspace(-1.0, 1.0, samples, dtype=torch.float64)
    rho_y, rho_x = torch.meshgrid(t, t, indexing="ij")
    w = wavefront(rho_x, rho_y)
    step = float(t[1] - t[0])
    gy, gx = torch.gradient(w, spacing=step, dim=(-2, -1))
    inside = torch.hypot(rho_x, rho_y) <= 1.0
    slope = torch.hypot(gx, gy)[..., inside]
    if slope.numel() == 0:
        return 0.0
    return float(2.0 * f_number * wavelength_nm * 1e-3 * slope.max()) * 1.1


def incoherent_psfs(wavefront: Wavefront, wavelength_nm: float, f_number: float, pixel_pitch_um: float,
                    psf_size: int, *, min_pupil_samples: int = 96, max_batch_bytes: int = 256 << 20,
                    device=None, progress: Callable[[int], None] | None = None) -> tuple[torch.Tensor, PupilSampling]:
    """Pixel-integrated incoherent PSFs ``[B, k, k]`` (float64) for a batch of wavefronts.

    ``wavefront(rho_x, rho_y)`` returns ``[B, ...]`` in waves at ``wavelength_nm`` for pupil
    coordinates normalised to the pupil radius (x right, y down, aligned with the sensor).
    Values are fractions of the total energy landing in each pixel: the window sum is < 1 by
    the energy falling outside it. Pixel (k//2, k//2) is centred on the paraxial image point.
    """
    if psf_size % 2 == 0:
        raise ValueError(f"psf_size must be odd, got {psf_size}")
    max_ray = max_ray_displacement_um(wavefront, f_number, wavelength_nm)
    plan = plan_sampling(wavelength_nm, f_number, pixel_pitch_um, psf_size, max_ray, min_pupil_samples)
    rho_x, rho_y, amplitude = pupil_grid(plan, device=device)
    w = wavefront(rho_x, rho_y)
    if w.ndim == 2:
        w = w[None]
    batch = w.shape[0]
    s, m, n_fft, k = plan.oversample, plan.period_px, plan.n_fft, psf_size

    # Pixel transfer function sinc(f p) on the L-point frequency grid (cycles per pixel = n s / L).
    freq = torch.fft.fftfreq(n_fft, d=1.0 / n_fft, dtype=torch.float64, device=device)
    pixel_tf = torch.sinc(freq * s / n_fft).to(torch.complex64)
    window = (torch.arange(k, device=device) - k // 2) % m
    j = plan.half_width
    energy = float((amplitude ** 2).sum())
    per_item = n_fft * n_fft * 8 * 3  # complex64 field + intensity spectrum + scratch
    chunk = max(1, min(batch, max_batch_bytes // per_item))

    out = torch.empty(batch, k, k, dtype=torch.float64, device=device)
    for start in range(0, batch, chunk):
        stop = min(batch, start + chunk)
        pupil = torch.polar(amplitude.expand(stop - start, -1, -1), 2.0 * math.pi * w[start:stop])
        # Zero-padded pupil; where it sits in the array only adds a linear phase to the amplitude,
        # so the intensity is centred on sample 0 whatever the offset.
        field = torch.zeros(stop - start, n_fft, n_fft, dtype=torch.complex64, device=device)
        field[:, :2 * j + 1, :2 * j + 1] = pupil
        amp = torch.view_as_real(torch.fft.fft2(field))
        del field
        intensity = amp.square().sum(-1) / (n_fft * n_fft * energy)  # Parseval: sums to 1
        del amp
        spectrum = torch.fft.fft2(intensity)
        spectrum = spectrum * pixel_tf[:, None] * pixel_tf[None, :]
        folded = spectrum.reshape(-1, s, m, s, m).sum(dim=(1, 3))
        per_pixel = torch.fft.ifft2(folded).real  # pixel energies, pixel offset 0 at index 0
        out[start:stop] = per_pixel[:, window][:, :, window].double()
        if progress is not None:
            progress(stop - start)
    return out, plan
