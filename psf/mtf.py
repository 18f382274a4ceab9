"""Modulation transfer function of PSF fields: tangential/sagittal, per channel and field position.

The optical transfer function is the Fourier transform of the PSF (Goodman, "Introduction to
Fourier Optics", 3rd ed., §6.3); the MTF is its modulus normalised to 1 at zero frequency. A
stored PSF holds pixel energies p[m] at integer offsets m (docs/optics.md), so its transfer
function at a frequency vector f (cycles per pixel) is the discrete-time Fourier transform
``OTF(f) = Σ_m p[m] exp(-2 pi i f·m)``, evaluated here exactly at any frequency (no FFT grid).
It is the optics' OTF times the pixel aperture ``sinc(f_x) sinc(f_y)`` (aliased above the
sampling's Nyquist frequency 0.5 cycles/px); ``divide_pixel=True`` divides the aperture out.

Directions (ISO 12233 / lens-chart vocabulary): the *tangential* (meridional) MTF takes f along
the radial direction from the optical axis to the node, the *sagittal* MTF perpendicular to it;
on the axis the radial direction is +x. MTF50 is the first frequency where the MTF falls to 0.5
(linear interpolation between samples); the cutoff is the first frequency where it falls to
``threshold`` (default 0.01). The diffraction limit of a circular pupil (Goodman eq. 6-31):

    MTF(nu) = (2 / pi) (arccos(nu / nu_c) - (nu / nu_c) sqrt(1 - (nu / nu_c)²)),  nu_c = 1 / (lambda N).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from psf.field import PSFField


def otf_along(psfs: torch.Tensor, direction, freqs_cpp) -> torch.Tensor:
    """Complex OTF [..., F] of PSFs [..., k, k] at frequencies ``freqs_cpp`` (cycles/pixel) along
    the unit vector ``direction`` (x, y); a [..., 2] direction gives one direction per PSF."""
    psfs = torch.as_tensor(psfs).double()
    k = psfs.shape[-1]
    m = torch.arange(k, dtype=torch.float64) - k // 2
    freqs = torch.as_tensor(np.asarray(freqs_cpp, dtype=np.float64))
    u = torch.as_tensor(np.asarray(direction, dtype=np.float64))
    # line spread along u is not needed: sum over pixels of p[m] exp(-2 pi i f (u_x m_x + u_y m_y))
    ex = torch.exp(-2j * math.pi * freqs[:, None] * m[None, :] * u[..., 0, None, None])  # [..., F, k]
    ey = torch.exp(-2j * math.pi * freqs[:, None] * m[None, :] * u[..., 1, None, None])
    p = psfs.to(torch.complex128)
    # OTF[..., f] = Σ_y Σ_x p[..., y, x] ey[..., f, y] ex[..., f, x]
    return torch.einsum("...yx,...fy,...fx->...f", p, ey.expand(*p.shape[:-2], *ey.shape[-2:]),
                        ex.expand(*p.shape[:-2], *ex.shape[-2:]))


def pixel_mtf(freqs_cpp, direction) -> np.ndarray:
    """Transfer function of a square pixel (1 px) along ``direction``: sinc(f u_x) sinc(f u_y) [..., F]."""
    f = np.asarray(freqs_cpp, dtype=np.float64)
    u = np.asarray(direction, dtype=np.float64)
    return np.sinc(f * u[..., 0, None]) * np.sinc(f * u[..., 1, None])


def mtf_along(psfs, direction, freqs_cpp, divide_pixel: bool = False) -> np.ndarray:
    """MTF [..., F] (1 at zero frequency) along ``direction``; optionally without the pixel aperture."""
    otf = otf_along(psfs, direction, freqs_cpp)
    dc = torch.as_tensor(psfs).double().sum(dim=(-2, -1)).to(torch.complex128)
    mtf = (otf / dc[..., None]).abs().numpy()
    if divide_pixel:
        mtf = mtf / pixel_mtf(freqs_cpp, np.broadcast_to(np.asarray(direction, np.float64), (*mtf.shape[:-1], 2)))
    return mtf


def diffraction_mtf(freqs_cyc_per_mm, wavelength_nm: float, f_number: float) -> np.ndarray:
    """Diffraction-limited MTF of a circular aberration-free pupil (Goodman eq. 6-31)."""
    nu = np.asarray(freqs_cyc_per_mm, dtype=np.float64) * wavelength_nm * 1e-6 * f_number
    nu = np.clip(nu, 0.0, 1.0)
    return 2.0 / math.pi * (np.arccos(nu) - nu * np.sqrt(1.0 - nu ** 2))


def diffraction_cutoff_cyc_per_mm(wavelength_nm: float, f_number: float) -> float:
    """1 / (lambda N) in cycles/mm."""
    return 1.0 / (wavelength_nm * 1e-6 * f_number)


def first_crossing(freqs, mtf, level: float) -> np.ndarray:
    """First frequency where ``mtf`` [..., F] falls to ``level`` (linear interpolation); NaN if never."""
    freqs = np.asarray(freqs, dtype=np.float64)
    mtf = np.asarray(mtf, dtype=np.float64)
    flat = mtf.reshape(-1, mtf.shape[-1])
    out = np.full(flat.shape[0], np.nan)
    for i, row in enumerate(flat):
        below = np.nonzero(row <= level)[0]
        if len(below) == 0:
            continue
        j = below[0]
        if j == 0:
            out[i] = freqs[0]
            continue
        a, b = row[j - 1], row[j]
        out[i] = freqs[j - 1] + (a - level) / (a - b) * (freqs[j] - freqs[j - 1]) if a != b else freqs[j]
    return out.reshape(mtf.shape[:-1])


def mtf50(freqs, mtf) -> np.ndarray:
    return first_crossing(freqs, mtf, 0.5)


def gaussian_mtf50_cpp(sigma_px: float) -> float:
    """Closed form for a Gaussian PSF: exp(-2 pi² sigma² f²) = 1/2 -> f = sqrt(ln 2 / 2) / (pi sigma)."""
    return math.sqrt(math.log(2.0) / 2.0) / (math.pi * sigma_px)


@dataclass
class FieldMTF:
    """MTFs of every node and channel of one field (frequencies in cycles/pixel and cycles/mm)."""

    freqs_cpp: np.ndarray  # [F]
    tangential: np.ndarray  # [C, N, F]
    sagittal: np.ndarray  # [C, N, F]
    field_height: np.ndarray  # [N], 1 at the sensor corner
    positions: np.ndarray  # [N, 2]
    channel_order: str
    wavelengths_nm: list[float] | None
    pixel_pitch_um: float | None
    f_number: float | None  # the one diffraction uses (working f-number with a thin lens)
    divide_pixel: bool
    threshold: float = 0.01

    @property
    def freqs_cyc_per_mm(self) -> np.ndarray | None:
        return None if self.pixel_pitch_um is None else self.freqs_cpp / (self.pixel_pitch_um * 1e-3)

    def mtf50(self) -> dict[str, np.ndarray]:
        """MTF50 [C, N] in cycles/pixel, tangential and sagittal."""
        return {"tangential": mtf50(self.freqs_cpp, self.tangential), "sagittal": mtf50(self.freqs_cpp, self.sagittal)}

    def cutoff(self) -> dict[str, np.ndarray]:
        """First frequency [C, N] (cycles/pixel) where the MTF falls to ``threshold``."""
        return {"tangential": first_crossing(self.freqs_cpp, self.tangential, self.threshold),
                "sagittal": first_crossing(self.freqs_cpp, self.sagittal, self.threshold)}

    def diffraction(self) -> np.ndarray | None:
        """Diffraction-limited MTF [C, F] at this sampling (times the pixel aperture along x unless
        ``divide_pixel``), or None without wavelengths, pitch and f-number."""
        if self.wavelengths_nm is None or self.pixel_pitch_um is None or self.f_number is None:
            return None
        curves = np.stack([diffraction_mtf(self.freqs_cyc_per_mm, lam, self.f_number) for lam in self.wavelengths_nm])
        if not self.divide_pixel:
            curves = curves * np.sinc(self.freqs_cpp)[None]
        return curves

    def summary(self) -> dict:
        """JSON-able numbers: MTF50 and cutoff per channel and node (cycles/pixel and cycles/mm)."""
        to_mm = None if self.pixel_pitch_um is None else 1.0 / (self.pixel_pitch_um * 1e-3)
        out = {"channel_order": self.channel_order, "divide_pixel": self.divide_pixel,
               "field_height": self.field_height.tolist(), "positions": self.positions.tolist(),
               "cutoff_threshold": self.threshold, "units": "cycles/pixel (and cycles/mm where the pitch is known)"}
        for name, table in (("mtf50", self.mtf50()), ("cutoff", self.cutoff())):
            for direction, values in table.items():
                out[f"{name}_{direction}_cpp"] = _nan_to_none(values)
                if to_mm is not None:
                    out[f"{name}_{direction}_cyc_per_mm"] = _nan_to_none(values * to_mm)
        if self.diffraction() is not None:
            out["diffraction_cutoff_cyc_per_mm"] = [diffraction_cutoff_cyc_per_mm(lam, self.f_number)
                                                    for lam in self.wavelengths_nm]
            out["diffraction_mtf50_cpp"] = _nan_to_none(mtf50(self.freqs_cpp, self.diffraction()))
        return out


def _nan_to_none(a) -> list:
    return [[None if not np.isfinite(v) else float(v) for v in row] for row in np.atleast_2d(a)] \
        if np.ndim(a) == 2 else [None if not np.isfinite(v) else float(v) for v in np.atleast_1d(a)]


def field_directions(field: PSFField) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Radial (tangential-MTF) and perpendicular (sagittal-MTF) unit vectors [N, 2], and the field height [N]."""
    h, w = field.sensor_res
    centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    off = field.positions - centre[None]
    r = np.hypot(off[:, 0], off[:, 1])
    radial = np.zeros_like(off)
    radial[:, 0] = 1.0
    far = r > 1e-9
    radial[far] = off[far] / r[far, None]
    sagittal = np.stack([-radial[:, 1], radial[:, 0]], axis=1)
    return radial, sagittal, r / max(float(np.hypot(*centre)), 1e-12)


def field_mtf(field: PSFField, n_freqs: int = 129, max_freq_cpp: float = 0.5, divide_pixel: bool = False,
              threshold: float = 0.01, f_number: float | None = None) -> FieldMTF:
    """MTF of every channel and node of ``field`` from 0 to ``max_freq_cpp`` (cycles/pixel).

    Cross-talk fields (C_in > 1) use each output channel's total response. ``f_number`` (for the
    diffraction limit) defaults to the file's ``working_f_number`` or ``f_number`` attribute.
    """
    freqs = np.linspace(0.0, float(max_freq_cpp), int(n_freqs))
    psfs = field.psfs.double().sum(dim=1)  # [C, N, k, k]
    radial, sagittal, height = field_directions(field)
    tangential = mtf_along(psfs, radial[None].repeat(psfs.shape[0], 0), freqs, divide_pixel)
    sag = mtf_along(psfs, sagittal[None].repeat(psfs.shape[0], 0), freqs, divide_pixel)
    attrs = field.attrs
    if f_number is None:
        f_number = attrs.get("working_f_number", attrs.get("f_number"))
    waves = attrs.get("wavelengths_nm")
    return FieldMTF(freqs_cpp=freqs, tangential=tangential, sagittal=sag, field_height=height,
                    positions=field.positions, channel_order=field.channel_order,
                    wavelengths_nm=None if waves is None else [float(w) for w in np.atleast_1d(waves)],
                    pixel_pitch_um=attrs.get("pixel_pitch_um"), f_number=None if f_number is None else float(f_number),
                    divide_pixel=divide_pixel, threshold=threshold)


def save_mtf_figure(result: FieldMTF, path, nodes=None, title: str | None = None):
    """PNG: per channel, tangential (solid) and sagittal (dashed) MTF of the chosen nodes coloured by
    field height, the diffraction limit in black; below, MTF50 against field height."""
    from psf.preview import _pyplot
    from utils.atomic import atomic_path

    plt = _pyplot()
    c = result.tangential.shape[0]
    nodes = list(range(result.tangential.shape[1])) if nodes is None else list(nodes)
    mm = result.freqs_cyc_per_mm
    x = mm if mm is not None else result.freqs_cpp
    unit = "cycles/mm" if mm is not None else "cycles/pixel"
    fig, axes = plt.subplots(2, c, figsize=(4.2 * c, 7.0), squeeze=False)
    cmap = plt.get_cmap("viridis")
    diff = result.diffraction()
    m50 = result.mtf50()
    for ch in range(c):
        ax = axes[0, ch]
        for n in nodes:
            colour = cmap(min(1.0, float(result.field_height[n])))
            ax.plot(x, result.tangential[ch, n], "-", color=colour, lw=1.2)
            ax.plot(x, result.sagittal[ch, n], "--", color=colour, lw=1.2)
        if diff is not None:
            ax.plot(x, diff[ch], "k-", lw=2.2, label="diffraction limit")
        ax.plot([], [], "-", color="gray", label="tangential")
        ax.plot([], [], "--", color="gray", label="sagittal")
        ax.set_ylim(0, 1.05)
        ax.set_xlim(x[0], x[-1])
        name = result.channel_order[ch] if ch < len(result.channel_order) else str(ch)
        lam = f" ({result.wavelengths_nm[ch]:.0f} nm)" if result.wavelengths_nm else ""
        ax.set_title(f"{name}{lam}: MTF, colour = field height")
        ax.set_xlabel(unit)
        ax.grid(alpha=0.3)
        if ch == 0:
            ax.set_ylabel("MTF" + (" (pixel aperture divided out)" if result.divide_pixel else ""))
            ax.legend(fontsize=8, loc="upper right")
        ax = axes[1, ch]
        scale = 1.0 / (result.pixel_pitch_um * 1e-3) if mm is not None else 1.0
        order = np.argsort(result.field_height)
        ax.plot(result.field_height[order], m50["tangential"][ch][order] * scale, "o-", ms=3, label="tangential")
        ax.plot(result.field_height[order], m50["sagittal"][ch][order] * scale, "s--", ms=3, label="sagittal")
        if diff is not None:
            ax.axhline(float(mtf50(x, diff[ch])), color="k", lw=2, label="diffraction limit")
        ax.set_xlabel("field height (1 = sensor corner)")
        ax.set_ylabel(f"MTF50 ({unit})")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        if ch == 0:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path, suffix=".png.tmp") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
