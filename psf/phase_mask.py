"""``phase_mask`` PSFs: a thin phase/amplitude mask (metalens, DOE, refractive asphere) imaging
point sources at a given depth onto the sensor by scalar wave propagation.

Model (Goodman, "Introduction to Fourier Optics", 3rd ed.):

* the mask is a thin element of clear diameter ``D`` (circular aperture, anti-aliased edge),
  transmittance ``t(x, y) = A(x, y) exp(i phi(x, y))`` (eq. 5-1, thin-element approximation);
* a point source at depth ``z_o`` in front of the mask illuminates it with the spherical wave
  ``exp(i k sqrt((x - x_o)² + (y - y_o)² + z_o²))`` (a plane wave for ``z_o = inf``);
* the field behind the mask is propagated over the mask-to-sensor distance ``z_s`` by

  - the angular spectrum (eq. 3-74): ``H(fx, fy) = exp(i 2 pi z sqrt(1/lambda² - fx² - fy²))``,
    evanescent waves dropped;
  - or the Fresnel transfer function (eq. 4-21): ``H = exp(i k z) exp(-i pi lambda z (fx² + fy²))``;

* the intensity ``|U|²`` on a fine grid (``dx = pitch / s``, s odd) is integrated over each pixel
  (sum of the s x s samples covering it: the midpoint rule on an intensity sampled above its
  Nyquist rate).

Off-axis nodes. The node at sensor offset ``u`` (from the optical axis) is the paraxial image of
the object point on the chief ray through the mask centre: ``x_o = -u z_o / z_s``. The incident
wave's linear tilt ``a`` (cycles/um) is divided out of the mask-plane field and put back into
the transfer function, ``H(f + a) exp(i 2 pi f . u)`` (shift theorem): the propagated field is
computed on a grid centred on ``u`` itself, so the window stays small whatever the field angle,
and the PSF centre ``[k//2, k//2]`` is the paraxial image point as for every other type.
For the angular spectrum ``a = d_xy / lambda`` with ``d`` the chief ray's direction cosines (the
image of a tilted plane wave moves by ``z tan(theta) = u`` exactly); for Fresnel ``a = u /
(lambda z_s)`` (the paraxial shift ``lambda z a = u``).

Lens profiles (phase in radians at the design wavelength ``lambda_0``, ``r`` the radius, ``R = D/2``,
``k_0 = 2 pi / lambda_0``; DFlat's ``lens_profiles.py`` offers the same family):

* ``hyperbolic`` (aberration-free metalens for the design depth ``z_d`` and sensor distance
  ``z_s``; Aieta et al., Nano Lett. 12, 2012): ``-k_0 (sqrt(r² + z_s²) - z_s) - k_0 (sqrt(r² + z_d²) - z_d)``
  (second term absent for ``z_d = inf``);
* ``quadratic`` (paraxial thin lens, Goodman eq. 5-10): ``-k_0 r² / (2 f)`` with ``1/f = 1/z_s + 1/z_d``;
* ``cubic`` (wavefront coding, Dowski & Cathey, Appl. Opt. 34, 1995): hyperbolic +
  ``2 pi alpha ((x/R)³ + (y/R)³)``, ``alpha`` = ``cubic_waves``;
* ``log_asphere`` (extended depth of field, Chi & George, Opt. Lett. 26, 2001): the ring of radius
  r focuses the depth ``z(r) = z_1 + (z_2 - z_1) (r/R)²`` onto the sensor,
  ``phi(r) = -k_0 int_0^r [rho / sqrt(rho² + z_s²) + rho / sqrt(rho² + z(rho)²)] drho``
  (integrated numerically);
* ``axicon`` (McLeod, JOSA 44, 1954): ``-k_0 r sin(beta)``, ``beta`` the cone angle (default the
  marginal ray angle ``atan(R / z_s)``);
* ``none``: no lens phase (with a user map: the map alone).

A user map (``phase_map``: ``.npy`` radians, or an 8/16-bit image scaled to [0, 2 pi);
``amplitude_map``: ``.npy`` or image scaled to [0, 1]) spans the aperture's bounding square
(row 0 at the top, y down as on the sensor) and is resampled bilinearly; the phase map is added to
the profile.

Dispersion: the profile is designed at ``design_wavelength_nm``; channel wavelength ``lambda``
sees ``phi lambda_0 / lambda`` (``refractive``, default: a fixed optical path without material
dispersion, so a lens focuses every wavelength at the same distance and only the profile's
monochromatic aberrations remain), ``wrap(phi) lambda_0 / lambda`` (``diffractive``: a DOE whose
height profile is fixed; its focal length scales as ``lambda_0 / lambda`` -- strong axial colour --
and light goes into other orders), or ``phi`` unchanged (``none``: a metasurface whose cells keep
their phase at every wavelength; focal length also ``~ lambda_0 / lambda``, no other orders).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from psf.optics import next_fast_len
from utils.errors import ConfigError

PROFILES = ("hyperbolic", "quadratic", "cubic", "log_asphere", "axicon", "none")
DISPERSIONS = ("refractive", "diffractive", "none")
PROPAGATIONS = ("asm", "fresnel")


# -- grids and propagation ------------------------------------------------------------------------
def fft_coords(n: int, dx: float, dtype=torch.float64, device=None) -> torch.Tensor:
    """Sample coordinates in FFT order: 0, dx, ..., then the negative ones."""
    return torch.fft.fftfreq(n, d=1.0 / n, dtype=dtype, device=device) * dx


def transfer_function(n: int, dx: float, wavelength_um: float, z_um: float, method: str = "asm",
                      tilt=(0.0, 0.0), shift=(0.0, 0.0), device=None) -> torch.Tensor:
    """Propagation transfer function [n, n] (FFT order, complex128) for fields sampled at ``dx``.

    ``tilt`` (cycles/um, x then y): the input field was divided by ``exp(i 2 pi a . x)``;
    ``shift`` (um): the output grid is centred on ``shift``. Angular spectrum (Goodman eq. 3-74)
    or Fresnel (eq. 4-21), see the module docstring. Plane waves whose rays land more than half the
    grid from its centre are dropped (band limit of Matsushima & Shimobaba 2009, written with the
    landing point ``z lambda f / sqrt(1 - lambda² f²)``, ``z lambda f`` for Fresnel).
    """
    if method not in PROPAGATIONS:
        raise ConfigError(f"propagation must be one of {PROPAGATIONS}, got {method!r}")
    f = torch.fft.fftfreq(n, d=dx, dtype=torch.float64, device=device)
    fx, fy = (f + tilt[0])[None, :], (f + tilt[1])[:, None]  # broadcast rows = y, columns = x
    half = 0.5 * n * dx
    if method == "asm":
        arg = (1.0 / wavelength_um ** 2 - fx ** 2) - fy ** 2
        amplitude = arg > 0  # evanescent waves dropped
        root = arg.clamp_(min=1e-30).sqrt_()
        phase = root * (2.0 * math.pi * z_um)
        # where the plane wave (fx, fy) lands: z f / sqrt(1/lambda^2 - f^2)
        amplitude &= ((z_um * fx) / root - shift[0]).abs_() <= half
        amplitude &= ((z_um * fy) / root - shift[1]).abs_() <= half
    else:
        phase = (2.0 * math.pi * z_um / wavelength_um - math.pi * wavelength_um * z_um * fx ** 2) \
            - math.pi * wavelength_um * z_um * fy ** 2
        amplitude = ((wavelength_um * z_um * fx - shift[0]).abs() <= half) & \
            ((wavelength_um * z_um * fy - shift[1]).abs() <= half)
    # Band limit (Matsushima & Shimobaba, Opt. Express 17, 2009): the plane waves landing outside
    # the output grid are dropped; their sampled transfer function would alias (wrap around).
    phase = phase + (2.0 * math.pi * shift[0]) * f[None, :] + (2.0 * math.pi * shift[1]) * f[:, None]
    return torch.polar(amplitude.to(torch.float64).expand(n, n), phase.expand(n, n))


def propagate(u: torch.Tensor, dx: float, wavelength_um: float, z_um: float, method: str = "asm",
              tilt=(0.0, 0.0), shift=(0.0, 0.0)) -> torch.Tensor:
    """Propagate a field ``u [..., n, n]`` (FFT order: index 0 at the origin) over ``z_um``."""
    n = u.shape[-1]
    if u.shape[-2] != n:
        raise ValueError(f"square fields only, got {tuple(u.shape[-2:])}")
    h = transfer_function(n, dx, wavelength_um, z_um, method, tilt, shift, device=u.device).to(u.dtype)
    return torch.fft.ifft2(torch.fft.fft2(u) * h)


# -- lens profiles -----------------------------------------------------------------------------------
def _inv(z: float) -> float:
    return 0.0 if math.isinf(z) else 1.0 / z


def profile_phase(profile: str, x: torch.Tensor, y: torch.Tensor, wavelength_um: float, radius_um: float,
                  sensor_distance_um: float, focus_depth_um: float = math.inf, cubic_waves: float = 0.0,
                  depth_range_um: tuple[float, float] | None = None,
                  axicon_angle_deg: float | None = None) -> torch.Tensor:
    """Phase (radians) of a lens profile at the design wavelength (see module docstring)."""
    k0 = 2.0 * math.pi / wavelength_um
    r2 = x ** 2 + y ** 2
    zs, zd = sensor_distance_um, focus_depth_um

    def hyperbolic():
        phi = -k0 * (torch.sqrt(r2 + zs ** 2) - zs)
        if not math.isinf(zd):
            phi = phi - k0 * (torch.sqrt(r2 + zd ** 2) - zd)
        return phi

    if profile == "hyperbolic":
        return hyperbolic()
    if profile == "quadratic":
        return -k0 * r2 * 0.5 * (1.0 / zs + _inv(zd))
    if profile == "cubic":
        return hyperbolic() + 2.0 * math.pi * cubic_waves * ((x / radius_um) ** 3 + (y / radius_um) ** 3)
    if profile == "log_asphere":
        if depth_range_um is None:
            raise ConfigError("log_asphere needs depth_range_mm (near, far)")
        z1, z2 = depth_range_um
        rho = torch.linspace(0.0, float(torch.sqrt(r2.max())) * 1.001 + 1e-9, 20001, dtype=torch.float64,
                             device=r2.device)
        z = z1 + (z2 - z1) * (rho / radius_um) ** 2
        slope = rho / torch.sqrt(rho ** 2 + zs ** 2) + rho / torch.sqrt(rho ** 2 + z ** 2)
        table = -k0 * torch.cat([torch.zeros(1, dtype=torch.float64, device=r2.device),
                                 torch.cumulative_trapezoid(slope, rho)])
        return _interp1(torch.sqrt(r2), rho, table)
    if profile == "axicon":
        beta = math.atan(radius_um / zs) if axicon_angle_deg is None else math.radians(axicon_angle_deg)
        return -k0 * torch.sqrt(r2) * math.sin(beta)
    if profile == "none":
        return torch.zeros_like(r2)
    raise ConfigError(f"unknown lens profile {profile!r} (known: {', '.join(PROFILES)})")


def _interp1(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of the table (xp increasing, uniform) at x (clamped)."""
    step = float(xp[1] - xp[0])
    t = ((x - xp[0]) / step).clamp(0, len(xp) - 1 - 1e-9)
    i = t.floor().long()
    w = t - i
    return fp[i] * (1 - w) + fp[(i + 1).clamp(max=len(xp) - 1)] * w


def load_map(value: Any, what: str) -> np.ndarray:
    """A 2-D map from an array, a ``.npy`` file, or an image (phase: [0, 2 pi); amplitude: [0, 1])."""
    if value is None:
        return None
    if isinstance(value, (str, Path)):
        path = Path(value)
        if not path.is_file():
            raise ConfigError(f"{what} file not found: {path}")
        if path.suffix == ".npy":
            arr = np.load(path).astype(np.float64)
        else:
            from PIL import Image

            img = np.asarray(Image.open(path))
            top = 65535.0 if img.dtype == np.uint16 else 255.0
            if img.ndim == 3:
                img = img[..., :3].mean(-1)
            arr = img.astype(np.float64) / top
            arr = arr * (2 * math.pi * top / (top + 1)) if what == "phase_map" else arr  # levels 0..top -> [0, 2 pi)
    else:
        arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 2 or min(arr.shape) < 2:
        raise ConfigError(f"{what} must be a 2-D map, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ConfigError(f"{what} contains NaN or inf")
    return arr


def sample_map(arr: np.ndarray, x: torch.Tensor, y: torch.Tensor, radius_um: float) -> torch.Tensor:
    """Bilinear sample of a map spanning [-R, R]² (row 0 at y = -R) at (x, y); 0 outside."""
    import torch.nn.functional as F

    src = torch.as_tensor(arr, dtype=torch.float64, device=x.device)[None, None]
    grid = torch.stack([x / radius_um, y / radius_um], dim=-1).reshape(1, 1, -1, 2).to(torch.float64)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(x.shape)


# -- the PSF type ----------------------------------------------------------------------------------
@dataclass
class PhaseMaskPSF:
    """Options of the ``phase_mask`` type (lengths in mm, wavelengths in nm).

    profile: hyperbolic | quadratic | cubic | log_asphere | axicon | none.
    aperture_mm: clear diameter D of the mask (circular).
    focal_length_mm: mask-to-sensor distance z_s (the profiles focus onto the sensor).
    focus_depth_mm: object distance the profile is designed to focus (None = infinity).
    object_depth_mm: depth of the simulated point sources (None = focus_depth_mm); a list of
        increasing depths makes a depth stack (``psf.depth.DepthPSFField``, one plane per depth).
    design_wavelength_nm: wavelength the phase profile is designed at.
    dispersion: refractive (default) | diffractive | none (how the phase scales with lambda).
    cubic_waves: cubic term amplitude alpha in waves at the aperture edge (``cubic``).
    depth_range_mm: (near, far) depths of the ``log_asphere``.
    axicon_angle_deg: cone angle of the ``axicon`` (default atan(R / z_s)).
    phase_map / amplitude_map: user maps (array, .npy or image path) over the aperture square.
    propagation: asm (angular spectrum, default) | fresnel.
    oversample: odd fine samples per pixel (None: chosen from the phase gradient, >= 3).
    fft_precision: single (complex64 FFTs, default; phases always in float64) | double.
    """

    profile: str = "hyperbolic"
    aperture_mm: float = 1.0
    focal_length_mm: float = 10.0
    focus_depth_mm: float | None = None
    object_depth_mm: float | list[float] | None = None
    design_wavelength_nm: float = 550.0
    dispersion: str = "refractive"
    cubic_waves: float = 20.0
    depth_range_mm: Any = None
    axicon_angle_deg: float | None = None
    phase_map: Any = None
    amplitude_map: Any = None
    propagation: str = "asm"
    oversample: int | None = None
    fft_precision: str = "single"

    def __post_init__(self):
        if self.profile not in PROFILES:
            from utils.registry import unknown_name_message

            raise ConfigError(unknown_name_message("profile", self.profile, list(PROFILES)))
        if self.dispersion not in DISPERSIONS:
            raise ConfigError(f"dispersion must be one of {DISPERSIONS}, got {self.dispersion!r}")
        if self.propagation not in PROPAGATIONS:
            raise ConfigError(f"propagation must be one of {PROPAGATIONS}, got {self.propagation!r}")
        for name in ("aperture_mm", "focal_length_mm", "design_wavelength_nm"):
            if not float(getattr(self, name)) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if isinstance(self.object_depth_mm, (list, tuple)):
            depths = [float(v) for v in self.object_depth_mm]
            if len(depths) > 1 and (any(not math.isfinite(d) for d in depths)
                                    or any(b <= a for a, b in zip(depths, depths[1:]))):
                raise ConfigError(f"a depth stack needs finite, strictly increasing object_depth_mm, got {depths}")
            self.object_depth_mm = depths if len(depths) > 1 else depths[0]
        for name in ("focus_depth_mm", "object_depth_mm"):
            for v in np.atleast_1d(getattr(self, name) if getattr(self, name) is not None else []):
                if not float(v) > 0:
                    raise ConfigError(f"{name} must be > 0 (or None for infinity), got {v}")
        if self.profile == "log_asphere":
            if self.depth_range_mm is None or len(self.depth_range_mm) != 2 or min(self.depth_range_mm) <= 0:
                raise ConfigError("log_asphere needs depth_range_mm = (near, far), both > 0")
            self.depth_range_mm = [float(v) for v in self.depth_range_mm]
        if self.fft_precision not in ("single", "double"):
            raise ConfigError(f"fft_precision must be single or double, got {self.fft_precision!r}")
        if self.oversample is not None and (int(self.oversample) < 1 or int(self.oversample) % 2 == 0):
            raise ConfigError(f"oversample must be an odd integer >= 1, got {self.oversample}")
        self._phase = load_map(self.phase_map, "phase_map")
        self._amplitude = load_map(self.amplitude_map, "amplitude_map")
        # keep the config JSON-able and small (it is stored as an HDF5 attribute, <= 64 KiB)
        for name, arr in (("phase_map", self._phase), ("amplitude_map", self._amplitude)):
            value = getattr(self, name)
            if arr is not None and not isinstance(value, (str, Path)):
                if arr.size <= 1024:
                    setattr(self, name, arr.tolist())
                else:
                    import hashlib

                    digest = hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()[:16]
                    setattr(self, name, f"<array {arr.shape[0]}x{arr.shape[1]} sha256 {digest}: pass a .npy path "
                                        "to make the field reproducible>")
            elif isinstance(value, Path):
                setattr(self, name, str(value))

    # lengths in um
    @property
    def radius_um(self) -> float:
        return 500.0 * float(self.aperture_mm)

    @property
    def sensor_distance_um(self) -> float:
        return 1000.0 * float(self.focal_length_mm)

    @property
    def focus_depth_um(self) -> float:
        return math.inf if self.focus_depth_mm is None else 1000.0 * float(self.focus_depth_mm)

    @property
    def is_stack(self) -> bool:
        """Several object depths: the simulator returns a ``DepthPSFField`` (psf/svpsf.py)."""
        return isinstance(self.object_depth_mm, list)

    def object_depths(self) -> list[float]:
        """Object distances of the stack in metres (the simulator's depth-stack protocol)."""
        return [float(d) / 1000.0 for d in self.object_depth_mm] if self.is_stack else [self.object_depth_um / 1e6]

    def magnification(self, object_distance_m: float) -> float:
        """Chief ray through the mask centre: -z_s / z_o."""
        return -float(self.focal_length_mm) / (1000.0 * float(object_distance_m))

    @property
    def object_depth_um(self) -> float:
        if self.is_stack:
            return 1000.0 * float(self.object_depth_mm[0])
        return self.focus_depth_um if self.object_depth_mm is None else 1000.0 * float(self.object_depth_mm)

    def _depths_um(self) -> list[float]:
        return [1000.0 * float(d) for d in self.object_depth_mm] if self.is_stack else [self.object_depth_um]

    def design_phase(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Profile + user phase map (radians at the design wavelength), unwrapped."""
        depth_range = None if self.depth_range_mm is None else tuple(1000.0 * v for v in self.depth_range_mm)
        phi = profile_phase(self.profile, x, y, self.design_wavelength_nm * 1e-3, self.radius_um,
                            self.sensor_distance_um, self.focus_depth_um, float(self.cubic_waves), depth_range,
                            self.axicon_angle_deg)
        if self._phase is not None:
            phi = phi + sample_map(self._phase, x, y, self.radius_um)
        return phi

    def mask(self, x: torch.Tensor, y: torch.Tensor, wavelength_nm: float, dx: float) -> torch.Tensor:
        """Complex transmittance at (x, y) um for one wavelength (aperture included)."""
        lam0 = self.design_wavelength_nm * 1e-3
        phi = self.design_phase(x, y)
        ratio = lam0 / (wavelength_nm * 1e-3)
        if self.dispersion == "diffractive":
            phi = torch.remainder(phi, 2 * math.pi) * ratio
        elif self.dispersion == "refractive":
            phi = phi * ratio
        r = torch.hypot(x, y)
        amp = ((self.radius_um - r) / dx + 0.5).clamp(0.0, 1.0)  # anti-aliased edge
        if self._amplitude is not None:
            amp = amp * sample_map(self._amplitude, x, y, self.radius_um).clamp(min=0.0)
        return torch.polar(amp, phi)

    def incident(self, x: torch.Tensor, y: torch.Tensor, wavelength_um: float, offset_um,
                 depth_um: float | None = None) -> tuple[torch.Tensor, tuple]:
        """Incident phase (radians) with its linear tilt removed, and the tilt (cycles/um)."""
        zs, zo = self.sensor_distance_um, self.object_depth_um if depth_um is None else float(depth_um)
        ux, uy = float(offset_um[0]), float(offset_um[1])
        norm = math.sqrt(ux * ux + uy * uy + zs * zs)
        if self.propagation == "asm":
            tilt = (ux / norm / wavelength_um, uy / norm / wavelength_um)  # direction cosines / lambda
        else:
            tilt = (ux / (wavelength_um * zs), uy / (wavelength_um * zs))
        k = 2.0 * math.pi / wavelength_um
        if math.isinf(zo):
            psi = k * (x * ux + y * uy) / norm
        else:
            xo, yo = -ux * zo / zs, -uy * zo / zs
            psi = k * (torch.sqrt((x - xo) ** 2 + (y - yo) ** 2 + zo ** 2) - math.sqrt(xo * xo + yo * yo + zo * zo))
        return psi - 2.0 * math.pi * (tilt[0] * x + tilt[1] * y), tilt

    def plan(self, wavelength_nm: float, pitch_um: float, psf_size: int, offsets_um: np.ndarray,
             depth_um: float | None = None) -> tuple[int, int]:
        """(oversample s, grid size n): the field at the sensor is sampled at 4x the largest local
        frequency of the mask-plane phase (its intensity above Nyquist), and the grid holds the
        aperture, the geometric footprint of the rays around the window centre and the window."""
        lam = wavelength_nm * 1e-3
        R = self.radius_um
        t = torch.linspace(-R, R, 257, dtype=torch.float64)
        yy, xx = torch.meshgrid(t, t, indexing="ij")
        inside = torch.hypot(xx, yy) <= R
        step = float(t[1] - t[0])
        fmax, reach = 0.0, R
        far = offsets_um[np.argmax(np.hypot(*offsets_um.T))] if len(offsets_um) else np.zeros(2)
        for off in {(0.0, 0.0), (float(far[0]), float(far[1]))}:
            phi = self.design_phase(xx, yy)  # unwrapped: the wraps of a DOE do not change local frequencies
            phi = phi if self.dispersion == "none" else phi * (self.design_wavelength_nm / wavelength_nm)
            psi, _ = self.incident(xx, yy, lam, off, depth_um)
            gy, gx = torch.gradient(phi + psi, spacing=step)
            fx, fy = gx / (2 * math.pi), gy / (2 * math.pi)  # cycles/um
            f = torch.hypot(fx, fy)[inside]
            fmax = max(fmax, float(f.max()) if f.numel() else 0.0)
            land_x = xx + self.sensor_distance_um * lam * fx
            land_y = yy + self.sensor_distance_um * lam * fy
            reach = max(reach, float(torch.hypot(land_x, land_y)[inside].max()))
        if self.oversample is not None:
            s = int(self.oversample)
        else:
            s = max(3, math.ceil(4.0 * fmax * pitch_um))
            s += 1 - s % 2
        dx = pitch_um / s
        extent = 2.0 * max(R, reach) * 1.1 + psf_size * pitch_um + 20.0 * lam * self.sensor_distance_um / (2 * R)
        return s, next_fast_len(math.ceil(extent / dx))

    def sensor_intensity(self, wavelength_nm: float, offset_um, dx: float, n: int, device=None,
                         dtype=torch.complex128, mask: torch.Tensor | None = None,
                         depth_um: float | None = None) -> torch.Tensor:
        """Intensity [n, n] at the sensor on a grid of spacing ``dx`` centred on the paraxial image of
        the node at ``offset_um`` (FFT order), normalised to the power leaving the mask.
        ``dtype``: complex128 (default) or complex64 for the FFTs; ``mask``: the transmittance on
        this grid if already computed (it does not depend on the node)."""
        lam = wavelength_nm * 1e-3
        c = torch.fft.fftshift(fft_coords(n, dx, device=device))
        yy, xx = torch.meshgrid(c, c, indexing="ij")
        t = self.mask(xx, yy, wavelength_nm, dx) if mask is None else mask
        psi, tilt = self.incident(xx, yy, lam, offset_um, depth_um)
        # phases in float64 (they reach 1e4 rad), the FFTs in the requested precision
        u = torch.fft.ifftshift(t * torch.polar(torch.ones_like(psi), psi)).to(dtype)
        power = float((u.abs() ** 2).sum())
        out = propagate(u, dx, lam, self.sensor_distance_um, self.propagation, tilt, offset_um)
        return ((out.real ** 2 + out.imag ** 2) / power).double()

    def simulate(self, ctx):
        offsets = ctx.geometry.offsets() * ctx.pixel_pitch_um  # [N, 2] um from the axis
        k = ctx.psf_size
        depths = self._depths_um()
        out = torch.empty(ctx.n_channels, len(depths), len(offsets), k, k, dtype=torch.float64)
        plans = []
        dtype = torch.complex64 if self.fft_precision == "single" else torch.complex128
        for ci, lam in enumerate(ctx.wavelengths_nm):
            # one grid per wavelength, large and fine enough for every depth
            s, n = (max(v) for v in zip(*(self.plan(lam, ctx.pixel_pitch_um, k, offsets, d) for d in depths)))
            s += 1 - s % 2
            n = next_fast_len(n)
            plans.append((s, n))
            dx = ctx.pixel_pitch_um / s
            idx = (torch.arange(k)[:, None] - k // 2) * s + (torch.arange(s)[None] - s // 2)  # [k, s]
            idx = idx.reshape(-1) % n
            c = torch.fft.fftshift(fft_coords(n, dx, device=ctx.device))
            yy, xx = torch.meshgrid(c, c, indexing="ij")
            mask = self.mask(xx, yy, lam, dx)
            del c, yy, xx
            for di, depth in enumerate(depths):
                for ni, off in enumerate(offsets):
                    inten = self.sensor_intensity(lam, (float(off[0]), float(off[1])), dx, n, ctx.device, dtype,
                                                  mask, depth).cpu()
                    out[ci, di, ni] = inten[idx][:, idx].reshape(k, s, k, s).sum(dim=(1, 3))
                    if ctx.progress is not None:
                        ctx.progress(1)
        attrs = {"oversample": [p[0] for p in plans], "grid_size": [p[1] for p in plans],
                 "f_number": float(self.focal_length_mm / self.aperture_mm)}
        return (out if self.is_stack else out[:, 0]), attrs


def airy_first_zero_um(wavelength_nm: float, distance_mm: float, aperture_mm: float) -> float:
    """1.22 lambda z / D (Goodman eq. 4-32 and the zero of J1 at 3.8317 = 1.2197 pi)."""
    return 3.8317059702 / math.pi * wavelength_nm * 1e-3 * distance_mm / aperture_mm
