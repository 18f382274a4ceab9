"""Depth: thin-lens defocus of an object off the focus distance, and PSF files with a depth axis.

Thin lens (focal length f, aperture diameter D = f / N, N the lens f-number), focused at
distance s_f, i.e. the sensor sits at the image distance ``v_f = f s_f / (s_f - f)``
(Gaussian lens equation 1/s + 1/v = 1/f). An object point at distance s focuses at
``v = f s / (s - f)``; the sensor sees the converging spherical wave referred to a sphere
centred on the sensor, a defocus whose wavefront error at the pupil edge is

    W020 = (D² / 8) (1 / v_f - 1 / v)        (length; divide by lambda for waves)

(Goodman, "Introduction to Fourier Optics", 3rd ed., §6.4.4, "a focusing error":
W_m = (w² / 2)(1 / z_a - 1 / z_i) with w = D / 2). Positive W020 (object nearer than the
focus distance, v > v_f) puts the focus behind the sensor, the sign convention of psf/seidel.py
(rays from the top of the pupil land above the axis). Its geometric blur is a disk of diameter
``D |v - v_f| / v`` on the sensor; the diffraction scale is the working f-number ``v_f / D``
(the pupil-to-sensor distance over D), which the wave-optics types use when a focal length is
given. The chief ray passes the lens centre undeviated, so a point at lateral offset X and
distance s lands at ``-X v_f / s``: the magnification of the plane at s is ``-v_f / s``.

``DepthPSFField`` is a stack of PSF fields over object distances (same grid, sensor, channels);
its HDF5 file has ``psfs [C_out, C_in, D, N, k, k]``, ``depths_m [D]`` (strictly increasing,
metres) and ``H_obj [D, 3, 3]`` (docs/optics.md, "Depth"). Between stored depths the PSF is
interpolated linearly in inverse distance (diopters), in which the defocus W020 is linear.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from psf.field import PSFField, _as_attr, _from_attr, resolve_psf_path
from utils import __version__
from utils.atomic import atomic_path
from utils.errors import ConfigError, DataError

# Fraunhofer lines for the Abbe number V_d = (n_d - 1) / (n_F - n_C) (nm).
LINE_D_NM, LINE_F_NM, LINE_C_NM = 587.56, 486.13, 656.27


# -- thin lens --------------------------------------------------------------------------------
def image_distance_mm(focal_length_mm: float, object_distance_m: float) -> float:
    """Image distance v (mm) of an object at ``object_distance_m``: 1/s + 1/v = 1/f."""
    s = float(object_distance_m) * 1e3
    f = float(focal_length_mm)
    if math.isinf(s):
        return f
    if not s > f:
        raise ConfigError(f"object distance {object_distance_m} m is not beyond the focal length {f} mm "
                          "(no real image)")
    return f * s / (s - f)


def defocus_w020_um(focal_length_mm: float, f_number: float, focus_distance_m: float, object_distance_m: float,
                    image_focal_length_mm: float | None = None) -> float:
    """Defocus wavefront error at the pupil edge (um): (D²/8)(1/v_f - 1/v), Goodman §6.4.4.

    ``image_focal_length_mm`` is the focal length the object is imaged with (e.g. at another
    wavelength, for axial colour); the sensor stays at ``v_f`` of ``focal_length_mm``.
    """
    d_mm = focal_length_mm / f_number
    v_f = image_distance_mm(focal_length_mm, focus_distance_m)
    v = image_distance_mm(image_focal_length_mm or focal_length_mm, object_distance_m)
    return (d_mm ** 2 / 8.0) * (1.0 / v_f - 1.0 / v) * 1e3


def blur_diameter_um(focal_length_mm: float, f_number: float, focus_distance_m: float,
                     object_distance_m: float) -> float:
    """Geometric blur disk on the sensor (um): D |v - v_f| / v."""
    d_mm = focal_length_mm / f_number
    v_f = image_distance_mm(focal_length_mm, focus_distance_m)
    v = image_distance_mm(focal_length_mm, object_distance_m)
    return d_mm * abs(v - v_f) / v * 1e3


def working_f_number(focal_length_mm: float, f_number: float, focus_distance_m: float) -> float:
    """Image-space working f-number v_f / D (sets the diffraction scale lambda N_w)."""
    return image_distance_mm(focal_length_mm, focus_distance_m) * f_number / focal_length_mm


def cauchy_index(wavelength_nm: float, refractive_index_d: float, abbe_number: float) -> float:
    """Refractive index from a two-term Cauchy law n = A + B / lambda², fitted to n_d and V_d.

    V_d = (n_d - 1) / (n_F - n_C) fixes B = (n_d - 1) / (V_d (1/lambda_F² - 1/lambda_C²)).
    """
    b = (refractive_index_d - 1.0) / (abbe_number * (LINE_F_NM ** -2 - LINE_C_NM ** -2))
    a = refractive_index_d - b / LINE_D_NM ** 2
    return a + b / float(wavelength_nm) ** 2


def thin_lens_focal_length_mm(focal_length_mm: float, reference_wavelength_nm: float, wavelength_nm: float,
                              refractive_index_d: float, abbe_number: float) -> float:
    """Focal length at ``wavelength_nm`` of a thin lens of ``focal_length_mm`` at the reference
    wavelength: 1/f ∝ (n(lambda) - 1) (lensmaker's equation, fixed curvatures)."""
    n_ref = cauchy_index(reference_wavelength_nm, refractive_index_d, abbe_number)
    n_lam = cauchy_index(wavelength_nm, refractive_index_d, abbe_number)
    return focal_length_mm * (n_ref - 1.0) / (n_lam - 1.0)


@dataclass
class ThinLens:
    """The depth and colour options the wave-optics types share (all optional).

    focal_length_mm: enables the thin-lens model; then ``f_number`` is the lens f-number f/D and
        the diffraction uses the working f-number v_f / D.
    focus_distance_m: where the lens is focused (needed with a focal length).
    object_distance_m: one distance (a single field) or a list (a depth stack, strictly
        increasing); default the focus distance.
    abbe_number, refractive_index_d: thin-lens glass for axial colour (focal length per
        wavelength from a Cauchy law; ``focal_length_mm`` is at ``reference_wavelength_nm``).
    """

    focal_length_mm: float | None = None
    focus_distance_m: float | None = None
    object_distance_m: float | list[float] | None = None
    abbe_number: float | None = None
    refractive_index_d: float = 1.5168  # N-BK7

    def check_lens(self):
        given = [n for n in ("focus_distance_m", "object_distance_m", "abbe_number") if getattr(self, n) is not None]
        if self.focal_length_mm is None:
            if given:
                raise ConfigError(f"{', '.join(given)} need(s) the thin-lens model: give focal_length_mm too")
            return
        if not float(self.focal_length_mm) > 0:
            raise ConfigError(f"focal_length_mm must be > 0, got {self.focal_length_mm}")
        if self.focus_distance_m is None:
            raise ConfigError("focal_length_mm needs focus_distance_m (where the lens is focused, metres)")
        for name, value in (("focus_distance_m", self.focus_distance_m), *(
                ("object_distance_m", d) for d in self.object_depths())):
            if not float(value) * 1e3 > float(self.focal_length_mm):
                raise ConfigError(f"{name} {value} m must be beyond the focal length ({self.focal_length_mm} mm)")
        depths = self.object_depths()
        if len(depths) > 1 and not all(b > a for a, b in zip(depths, depths[1:])):
            raise ConfigError(f"object_distance_m must be strictly increasing, got {depths}")
        if self.abbe_number is not None and not float(self.abbe_number) > 0:
            raise ConfigError(f"abbe_number must be > 0, got {self.abbe_number}")
        if not float(self.refractive_index_d) > 1:
            raise ConfigError(f"refractive_index_d must be > 1, got {self.refractive_index_d}")

    @property
    def has_lens(self) -> bool:
        return self.focal_length_mm is not None

    @property
    def is_stack(self) -> bool:
        return isinstance(self.object_distance_m, (list, tuple))

    def object_depths(self) -> list[float]:
        """Object distances (m) to simulate: [focus] by default."""
        if self.object_distance_m is None:
            return [float(self.focus_distance_m)] if self.focus_distance_m is not None else []
        if isinstance(self.object_distance_m, (list, tuple)):
            return [float(d) for d in self.object_distance_m]
        return [float(self.object_distance_m)]

    def diffraction_f_number(self, f_number: float) -> float:
        """The f-number the Fraunhofer computation uses."""
        if not self.has_lens:
            return float(f_number)
        return working_f_number(self.focal_length_mm, f_number, self.focus_distance_m)

    def lens_w020_waves(self, f_number: float, object_distance_m: float, wavelength_nm: float,
                        reference_wavelength_nm: float) -> float:
        """Thin-lens defocus (waves at ``wavelength_nm``) of an object, with axial colour if a glass
        is given (the sensor is focused for the reference wavelength)."""
        if not self.has_lens:
            return 0.0
        f_lam = None
        if self.abbe_number is not None:
            f_lam = thin_lens_focal_length_mm(self.focal_length_mm, reference_wavelength_nm, wavelength_nm,
                                              self.refractive_index_d, self.abbe_number)
        w_um = defocus_w020_um(self.focal_length_mm, f_number, self.focus_distance_m, object_distance_m, f_lam)
        return w_um / (wavelength_nm * 1e-3)

    def magnification(self, object_distance_m: float) -> float:
        """Lateral magnification -v_f / s of the object plane at that distance."""
        v_f = image_distance_mm(self.focal_length_mm, self.focus_distance_m)
        return -v_f / (float(object_distance_m) * 1e3)


# -- depth stacks ---------------------------------------------------------------------------
@dataclass
class DepthPSFField:
    """PSF fields of one lens at D object distances: ``psfs [C_out, C_in, D, N, k, k]``."""

    psfs: torch.Tensor
    depths_m: np.ndarray
    grid_shape: tuple[int, int]
    sensor_res: tuple[int, int]
    H_img: np.ndarray
    H_obj: np.ndarray  # [D, 3, 3]
    psf_type: str = "unknown"
    channel_order: str = "RGB"
    normalized: bool = True
    attrs: dict[str, Any] = field(default_factory=dict)
    # step 2: one basis per depth plane, K shared by the planes (docs/optics.md, "Depth")
    basis_psfs: torch.Tensor | None = None  # [C_out, C_in, D, K, k, k]
    basis_coef: torch.Tensor | None = None  # [C_out, C_in, D, K, N]

    @property
    def n_depths(self) -> int:
        return self.psfs.shape[2]

    @property
    def has_basis(self) -> bool:
        return self.basis_psfs is not None

    @property
    def n_basis(self) -> int | None:
        return None if self.basis_psfs is None else self.basis_psfs.shape[3]

    @property
    def psf_size(self) -> int:
        return self.psfs.shape[-1]

    @classmethod
    def from_planes(cls, planes: Sequence[PSFField], depths_m: Sequence[float]) -> "DepthPSFField":
        """Stack single-depth fields (same grid, sensor, channels, H_img)."""
        if len(planes) != len(depths_m) or not planes:
            raise ValueError(f"need one plane per depth, got {len(planes)} planes and {len(depths_m)} depths")
        first = planes[0]
        for p in planes[1:]:
            if (p.psfs.shape != first.psfs.shape or p.grid_shape != first.grid_shape
                    or tuple(p.sensor_res) != tuple(first.sensor_res) or not np.allclose(p.H_img, first.H_img)):
                raise ValueError("depth planes must share grid, sensor, channels, PSF size and H_img")
        attrs = {k: v for k, v in first.attrs.items() if k not in ("object_distance_m", "magnification")}
        energies = [p.attrs.get("window_energy_min") for p in planes]
        if all(e is not None for e in energies):
            attrs["window_energy_min"] = float(min(energies))
        attrs["magnification"] = [float(p.attrs.get("magnification", float("nan"))) for p in planes]
        basis = {}
        if all(p.has_basis for p in planes) and len({p.n_basis for p in planes}) == 1:
            basis = {"basis_psfs": torch.stack([p.basis_psfs for p in planes], dim=2).contiguous(),
                     "basis_coef": torch.stack([p.basis_coef for p in planes], dim=2).contiguous()}
            attrs["explained_energy"] = [p.attrs.get("explained_energy") for p in planes]
        else:
            for key in ("basis_method", "explained_energy"):
                attrs.pop(key, None)
        out = cls(psfs=torch.stack([p.psfs for p in planes], dim=2).contiguous(),
                  depths_m=np.asarray(depths_m, dtype=np.float64), grid_shape=tuple(first.grid_shape),
                  sensor_res=tuple(first.sensor_res), H_img=np.asarray(first.H_img, np.float64),
                  H_obj=np.stack([np.asarray(p.H_obj, np.float64) for p in planes]), psf_type=first.psf_type,
                  channel_order=first.channel_order, normalized=first.normalized, attrs=attrs, **basis)
        out.validate()
        return out

    @classmethod
    def from_field(cls, psf_field: PSFField) -> "DepthPSFField":
        """A depth-independent field (e.g. an old single-plane file): one plane at infinity,
        served at every depth."""
        depth = float(psf_field.attrs.get("object_distance_m", math.inf))
        return cls.from_planes([psf_field], [depth])

    def validate(self, source: str = "depth PSF field") -> None:
        p = self.psfs
        if p.ndim != 6:
            raise DataError(f"{source}: 'psfs' must be [C_out, C_in, D, N, k, k], got {tuple(p.shape)}")
        d = p.shape[2]
        depths = np.asarray(self.depths_m, dtype=np.float64)
        if depths.shape != (d,):
            raise DataError(f"{source}: 'depths_m' must hold D={d} distances, got shape {depths.shape}")
        if not np.all(depths > 0) or np.any(np.diff(depths) <= 0):
            raise DataError(f"{source}: 'depths_m' must be positive and strictly increasing, got {depths.tolist()}")
        if np.shape(self.H_obj) != (d, 3, 3):
            raise DataError(f"{source}: 'H_obj' must be [D={d}, 3, 3], got {np.shape(self.H_obj)}")
        if (self.basis_psfs is None) != (self.basis_coef is None):
            raise DataError(f"{source}: 'basis_psfs' and 'basis_coef' must be present together")
        if self.basis_psfs is not None:
            b, c = self.basis_psfs, self.basis_coef
            if b.ndim != 6 or tuple(b.shape[:3]) != tuple(p.shape[:3]) or tuple(b.shape[4:]) != tuple(p.shape[4:]):
                raise DataError(f"{source}: 'basis_psfs' must be [C_out, C_in, D, K, k, k] = "
                                f"{[*p.shape[:3], 'K', *p.shape[4:]]}, got {tuple(b.shape)}")
            if c.ndim != 5 or tuple(c.shape) != (*p.shape[:3], b.shape[3], p.shape[3]):
                raise DataError(f"{source}: 'basis_coef' must be [C_out, C_in, D, K, N] = "
                                f"{[*p.shape[:3], b.shape[3], p.shape[3]]}, got {tuple(c.shape)}")
        for index in range(d):  # shapes, grid, channels, normalisation of every plane
            self.plane(index).validate(f"{source} (depth {depths[index]:g} m)")
        if not torch.isfinite(p).all():
            raise DataError(f"{source}: 'psfs' contains NaN or inf")

    def plane(self, index: int) -> PSFField:
        """The field at stored depth ``index`` (a regular single-plane ``PSFField``)."""
        attrs = {**self.attrs, "object_distance_m": float(self.depths_m[index])}
        for key in ("magnification", "explained_energy"):  # per-plane lists -> the plane's entry
            values = self.attrs.get(key)
            if isinstance(values, (list, tuple)) and len(values) == self.n_depths:
                attrs[key] = values[index]
        basis = {}
        if self.has_basis:
            basis = {"basis_psfs": self.basis_psfs[:, :, index], "basis_coef": self.basis_coef[:, :, index]}
        return PSFField(psfs=self.psfs[:, :, index], grid_shape=self.grid_shape, sensor_res=self.sensor_res,
                        H_img=self.H_img, H_obj=self.H_obj[index], psf_type=self.psf_type,
                        channel_order=self.channel_order, normalized=self.normalized, attrs=attrs, **basis)

    def depth_weights(self, depth_m: float) -> list[tuple[int, float]]:
        """(plane, weight) pairs interpolating ``depth_m`` linearly in 1/distance (clamped)."""
        inv = 1.0 / np.asarray(self.depths_m, dtype=np.float64)  # decreasing
        x = 1.0 / float(depth_m) if depth_m > 0 else math.inf
        if self.n_depths == 1 or x >= inv[0]:
            return [(0, 1.0)]
        if x <= inv[-1]:
            return [(self.n_depths - 1, 1.0)]
        i = int(np.searchsorted(-inv, -x, side="right")) - 1  # inv[i] >= x > inv[i + 1]
        t = (inv[i] - x) / (inv[i] - inv[i + 1])
        return [(i, 1.0 - t), (i + 1, t)] if t > 0 else [(i, 1.0)]

    def at_depth(self, depth_m: float) -> PSFField:
        """The field at any distance: the stored plane, or two planes mixed linearly in 1/distance
        (a mixed plane carries no basis: each stored plane has its own; ``LayeredRenderer`` mixes
        the two planes' renders, each with its basis)."""
        pairs = self.depth_weights(depth_m)
        if len(pairs) == 1:
            return self.plane(pairs[0][0])
        (i, wi), (j, wj) = pairs
        psfs = (wi * self.psfs[:, :, i].double() + wj * self.psfs[:, :, j].double()).to(self.psfs.dtype)
        base = self.plane(i)
        attrs = {k: v for k, v in base.attrs.items() if k not in ("basis_method", "explained_energy")}
        return replace(base, psfs=psfs, H_obj=wi * self.H_obj[i] + wj * self.H_obj[j], basis_psfs=None,
                       basis_coef=None, attrs={**attrs, "object_distance_m": float(depth_m)})


def save_depth_psf_field(depth_field: DepthPSFField, path: str | os.PathLike) -> Path:
    """Write a depth stack (``.h5`` path, or a folder -> ``folder/psfs.h5``), atomically."""
    import h5py

    from psf.field import PSF_FILENAME

    depth_field.validate()
    path = Path(path)
    if path.suffix not in (".h5", ".hdf5"):
        path = path / PSF_FILENAME
    with atomic_path(path, suffix=".h5.tmp") as tmp, h5py.File(tmp, "w") as f:
        arr = depth_field.psfs.detach().cpu().numpy().astype(np.float32)
        chunks = (1, 1, 1, *arr.shape[3:])
        f.create_dataset("psfs", data=arr, compression="gzip", compression_opts=4, chunks=chunks, shuffle=True)
        f.create_dataset("depths_m", data=np.asarray(depth_field.depths_m, dtype=np.float64))
        positions = depth_field.plane(0).positions
        f.create_dataset("positions", data=positions.astype(np.float32))
        f.create_dataset("H_img", data=np.asarray(depth_field.H_img, dtype=np.float64))
        f.create_dataset("H_obj", data=np.asarray(depth_field.H_obj, dtype=np.float64))
        if depth_field.has_basis:
            for name in ("basis_psfs", "basis_coef"):
                data = getattr(depth_field, name).detach().cpu().numpy().astype(np.float32)
                f.create_dataset(name, data=data, compression="gzip", compression_opts=4,
                                 chunks=(1, 1, 1, *data.shape[3:]), shuffle=True)
            f.attrs["n_basis"] = depth_field.n_basis
        f.attrs["psf_type"] = depth_field.psf_type
        f.attrs["grid_shape"] = np.asarray(depth_field.grid_shape, dtype=np.int64)
        f.attrs["psf_size"] = depth_field.psf_size
        f.attrs["sensor_res"] = np.asarray(depth_field.sensor_res, dtype=np.int64)
        f.attrs["channel_order"] = depth_field.channel_order
        f.attrs["normalized"] = bool(depth_field.normalized)
        f.attrs["n_depths"] = depth_field.n_depths
        f.attrs.setdefault("generator", f"restorelab {__version__}")
        for key, value in depth_field.attrs.items():
            if value is not None and key != "object_distance_m":
                f.attrs[key] = _as_attr(value)
    return path


def load_depth_psf_field(path: str | os.PathLike) -> DepthPSFField:
    """Read a depth-aware PSF file; a single-plane file (no ``depths_m``) is returned as a stack of
    one plane (``from_field``), so every PSF file can drive the layered renderer."""
    import h5py

    from psf.field import REQUIRED_ATTRS, load_psf_field

    path = resolve_psf_path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"{path}: not a readable HDF5 file ({exc})") from None
    with f:
        if "depths_m" not in f:
            has_depth = False
        else:
            has_depth = True
            for name in ("psfs", "H_img", "H_obj"):
                if name not in f:
                    raise DataError(f"{path}: missing dataset '{name}'")
            missing = [a for a in REQUIRED_ATTRS if a not in f.attrs]
            if missing:
                raise DataError(f"{path}: missing attribute(s) {', '.join(missing)}")
            attrs = {k: _from_attr(v) for k, v in f.attrs.items()}
            for k in ("psf_size", "n_depths", "n_basis"):
                attrs.pop(k, None)
            basis = {name: torch.from_numpy(f[name][()].astype(np.float32))
                     for name in ("basis_psfs", "basis_coef") if name in f}
            out = DepthPSFField(
                psfs=torch.from_numpy(f["psfs"][()].astype(np.float32)), depths_m=f["depths_m"][()].astype(np.float64),
                grid_shape=tuple(int(v) for v in attrs.pop("grid_shape")),
                sensor_res=tuple(int(v) for v in attrs.pop("sensor_res")),
                H_img=f["H_img"][()].astype(np.float64), H_obj=f["H_obj"][()].astype(np.float64),
                psf_type=str(attrs.pop("psf_type")), channel_order=str(attrs.pop("channel_order")),
                normalized=bool(attrs.pop("normalized")), attrs=attrs, **basis)
    if not has_depth:
        return DepthPSFField.from_field(load_psf_field(path))
    out.validate(source=str(path))
    return out

