"""``seidel`` PSFs: diffraction through a circular pupil with third-order (Seidel) aberrations.

Wavefront (Wyant & Creath, "Basic wavefront aberration theory for optical metrology", Applied
Optics and Optical Engineering XI, 1992, section on the Seidel aberrations), coefficients in waves at the pupil edge (rho = 1) and full field (h = 1, the
sensor corner), theta measured from the direction of the field point:

    W(rho, theta; h) = W020 rho^2 + W040 rho^4 + W131 h rho^3 cos(theta)
                     + W222 h^2 rho^2 cos^2(theta) + W220 h^2 rho^2 + W311 h^3 rho cos(theta)

(defocus, spherical, coma, astigmatism, field curvature, distortion). The coefficients are in
waves at ``reference_wavelength_nm``: they describe one optical path difference, so channel c sees
``W * lambda_ref / lambda_c`` waves. The PSF is computed by psf/optics.py (Fraunhofer, Nyquist-
sampled, exact pixel integration). Sign convention: positive W311 moves image points away from
the axis by ``2 N lambda W311 h^3`` (pincushion), negative towards it (barrel); coma of either
sign is mirror-symmetric about the radial direction.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from psf.depth import ThinLens
from psf.optics import incoherent_psfs
from utils.errors import ConfigError

SEIDEL_TERMS = ("W020", "W040", "W131", "W222", "W220", "W311")


def seidel_wavefront(coefficients: dict[str, float], h: torch.Tensor, direction: torch.Tensor,
                     rho_x: torch.Tensor, rho_y: torch.Tensor) -> torch.Tensor:
    """W in waves [N, *rho.shape] for nodes at field heights h [N] and directions [N, 2]."""
    c = {name: float(coefficients.get(name, 0.0)) for name in SEIDEL_TERMS}
    h = h.reshape(-1, *([1] * rho_x.ndim)).to(rho_x)
    cos_t = direction[:, 0].reshape(h.shape).to(rho_x)
    sin_t = direction[:, 1].reshape(h.shape).to(rho_x)
    rho2 = (rho_x ** 2 + rho_y ** 2)[None]
    rho_par = rho_x[None] * cos_t + rho_y[None] * sin_t  # rho cos(theta), theta from the field direction
    return (c["W020"] * rho2 + c["W040"] * rho2 ** 2 + c["W131"] * h * rho2 * rho_par
            + c["W222"] * h ** 2 * rho_par ** 2 + c["W220"] * h ** 2 * rho2 + c["W311"] * h ** 3 * rho_par)


def check_seidel(coefficients: dict) -> dict[str, float]:
    from utils.registry import closest

    out = {}
    for name, value in dict(coefficients or {}).items():
        key = str(name).upper()
        if key not in SEIDEL_TERMS:
            guess = closest(key, SEIDEL_TERMS)
            hint = f"; did you mean '{guess}'?" if guess else ""
            raise ConfigError(f"unknown Seidel coefficient '{name}'{hint} (known: {', '.join(SEIDEL_TERMS)})")
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"Seidel coefficient {name} must be a number of waves, got {value!r}") from None
    return out


@dataclass
class SeidelPSF(ThinLens):
    """Options of the ``seidel`` type.

    f_number: image-space working f-number N (sets the Airy radius 1.22 lambda N); with
        ``focal_length_mm`` (thin-lens depth model, psf/depth.py) the lens f-number f/D instead.
    seidel: coefficients in waves, e.g. {"W040": 0.5, "W131": 0.3}; missing terms are 0.
    reference_wavelength_nm: wavelength at which the coefficients are given.
    axial_color_waves: per channel, extra defocus W020 (waves at the reference wavelength).
    lateral_color: per channel, relative magnification m_c / m_ref - 1 (a node at r px from the
        axis moves outward by ``lateral_color[c] * r`` px), as the tilt W111 h rho cos(theta).
    focal_length_mm, focus_distance_m, object_distance_m, abbe_number, refractive_index_d:
        thin-lens depth and axial colour (``ThinLens``).
    min_pupil_samples: pupil sampling floor (accuracy; see psf/optics.py).
    """

    f_number: float = 2.8
    seidel: dict[str, float] = field(default_factory=dict)
    reference_wavelength_nm: float = 550.0
    axial_color_waves: list[float] | None = None
    lateral_color: list[float] | None = None
    min_pupil_samples: int = 96

    def __post_init__(self):
        self.seidel = check_seidel(self.seidel)
        if not float(self.f_number) > 0:
            raise ConfigError(f"f_number must be > 0, got {self.f_number}")
        if not float(self.reference_wavelength_nm) > 0:
            raise ConfigError(f"reference_wavelength_nm must be > 0, got {self.reference_wavelength_nm}")
        self.check_lens()

    def channel_terms(self, ctx, wavelength_nm: float, channel: int, object_distance_m: float | None):
        """(extra W020, W111) in waves at ``wavelength_nm``: thin-lens defocus + axial colour, lateral colour."""
        n_w = self.diffraction_f_number(self.f_number)
        w020 = 0.0
        if object_distance_m is not None:
            w020 += self.lens_w020_waves(self.f_number, object_distance_m, wavelength_nm, self.reference_wavelength_nm)
        if self.axial_color_waves is not None:
            w020 += ctx.per_channel("axial_color_waves", self.axial_color_waves)[channel] * (
                self.reference_wavelength_nm / wavelength_nm)
        w111 = 0.0
        if self.lateral_color is not None:
            # a tilt a rho cos(theta) moves the image by 2 N lambda a (psf/optics.py): r_corner h p dm = 2 N lambda a h
            shift_um = ctx.per_channel("lateral_color", self.lateral_color)[channel] * (
                ctx.geometry.corner_radius * ctx.pixel_pitch_um)
            w111 = shift_um / (2.0 * n_w * wavelength_nm * 1e-3)
        return w020, w111

    def wavefront_fn(self, ctx, wavelength_nm: float, channel: int = 0, object_distance_m: float | None = None):
        geom = ctx.geometry
        h = torch.from_numpy(geom.field_height())
        direction = torch.from_numpy(geom.field_direction())
        scale = self.reference_wavelength_nm / wavelength_nm
        w020, w111 = self.channel_terms(ctx, wavelength_nm, channel, object_distance_m)
        extra = {"W020": w020, "W311": 0.0}

        def wavefront(rx, ry):
            w = scale * seidel_wavefront(self.seidel, h, direction, rx, ry)
            if w020 or w111:
                w = w + seidel_wavefront(extra, h, direction, rx, ry)
                if w111:
                    hh = h.reshape(-1, *([1] * rx.ndim)).to(rx)
                    cos_t = direction[:, 0].reshape(hh.shape).to(rx)
                    sin_t = direction[:, 1].reshape(hh.shape).to(rx)
                    w = w + w111 * hh * (rx[None] * cos_t + ry[None] * sin_t)
            return w

        return wavefront

    def simulate(self, ctx):
        n_w = self.diffraction_f_number(self.f_number)
        depths = self.object_depths() or [None]
        stack, plans = [], []
        for depth in depths:
            out = []
            for c, lam in enumerate(ctx.wavelengths_nm):
                psfs, plan = incoherent_psfs(self.wavefront_fn(ctx, lam, c, depth), lam, n_w, ctx.pixel_pitch_um,
                                             ctx.psf_size, min_pupil_samples=self.min_pupil_samples,
                                             device=ctx.device, progress=ctx.progress)
                out.append(psfs)
                plans.append(plan)
            stack.append(torch.stack(out))
        attrs = {"f_number": float(self.f_number), "sampling_q": [p.q for p in plans[:len(ctx.wavelengths_nm)]]}
        attrs.update(lens_attrs(self))
        return (torch.stack(stack, dim=1) if self.is_stack else stack[0]), attrs


def lens_attrs(options) -> dict:
    """File attributes of the thin-lens model (empty without a focal length)."""
    if not options.has_lens:
        return {}
    out = {"focal_length_mm": float(options.focal_length_mm), "focus_distance_m": float(options.focus_distance_m),
           "aperture_mm": float(options.focal_length_mm) / float(options.f_number),
           "working_f_number": float(options.diffraction_f_number(options.f_number))}
    if not options.is_stack:
        out["object_distance_m"] = options.object_depths()[0]
    return out
