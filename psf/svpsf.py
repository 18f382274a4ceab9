"""Spatially varying PSF fields: ``PSFSimulator(psf_type=..., ...).simulate() -> PSFField``.

Every type computes, for each channel and each grid node, a PSF on a ``k x k`` pixel window whose
centre ``[k//2, k//2]`` is the paraxial (undistorted) image of the node's object point, normalised
to sum 1 (DESIGN.md, "PSF file"). Field position is described by the normalised field height
``h = |p - c| / |corner - c|`` (``c`` = sensor centre, so ``h = 1`` at the sensor corner) and the
direction ``(cos t, sin t)`` from the centre to the node, in sensor coordinates (x right, y down).

Types (one module each): ``gaussian`` (psf/gaussian.py), ``seidel`` (psf/seidel.py),
``zernike`` (psf/zernike.py), ``motion`` (psf/motion.py), ``phase_mask`` (psf/phase_mask.py).
Their options are the type's dataclass fields and are passed as keywords: ``PSFSimulator(psf_type="seidel", f_number=2.8,
seidel={"W040": 1.0})``.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from psf.field import PSFField, default_H_img, grid_positions
from utils import __version__
from utils.errors import ConfigError
from utils.registry import closest, unknown_name_message

DEFAULT_WAVELENGTHS_NM = (610.0, 530.0, 470.0)  # R, G, B


@dataclass(frozen=True)
class FieldGeometry:
    """Where the nodes sit on the sensor and their field coordinates."""

    grid_shape: tuple[int, int]
    sensor_res: tuple[int, int]
    H_img: np.ndarray

    @property
    def positions(self) -> np.ndarray:
        """[N, 2] (x, y) pixel of every node, row-major."""
        return grid_positions(self.H_img, self.grid_shape)

    @property
    def centre(self) -> tuple[float, float]:
        """Optical axis: the sensor centre (x, y)."""
        h, w = self.sensor_res
        return (w - 1) / 2.0, (h - 1) / 2.0

    @property
    def corner_radius(self) -> float:
        """Distance (px) from the centre to a sensor corner: field height h = 1."""
        cx, cy = self.centre
        return max(math.hypot(cx, cy), 1e-12)

    def offsets(self) -> np.ndarray:
        """[N, 2] node position minus the centre (px)."""
        return self.positions - np.asarray(self.centre)[None]

    def field_height(self) -> np.ndarray:
        """[N] normalised field height h (1 at the sensor corner)."""
        return np.hypot(*self.offsets().T) / self.corner_radius

    def field_direction(self) -> np.ndarray:
        """[N, 2] unit vector (cos t, sin t) from the centre to each node; (1, 0) on axis."""
        off = self.offsets()
        r = np.hypot(*off.T)
        unit = np.zeros_like(off)
        unit[:, 0] = 1.0
        far = r > 1e-9
        unit[far] = off[far] / r[far, None]
        return unit


@dataclass
class SimulationContext:
    """What a PSF type needs besides its own options."""

    geometry: FieldGeometry
    psf_size: int
    wavelengths_nm: tuple[float, ...]
    pixel_pitch_um: float
    generator: torch.Generator
    device: torch.device
    progress: Callable[[int], None] | None = None

    @property
    def n_channels(self) -> int:
        return len(self.wavelengths_nm)

    @property
    def n_nodes(self) -> int:
        gh, gw = self.geometry.grid_shape
        return gh * gw

    def per_channel(self, name: str, values) -> list[float]:
        """A per-channel option as a list, checked for length."""
        values = [float(v) for v in (values if isinstance(values, (list, tuple)) else [values])]
        if len(values) == 1:
            values = values * self.n_channels
        if len(values) != self.n_channels:
            raise ConfigError(f"{name} needs one value per channel ({self.n_channels}), got {len(values)}")
        return values


def _psf_types() -> dict[str, type]:
    from psf.gaussian import GaussianPSF
    from psf.motion import MotionPSF
    from psf.phase_mask import PhaseMaskPSF
    from psf.seidel import SeidelPSF
    from psf.zernike import ZernikePSF

    return {"gaussian": GaussianPSF, "seidel": SeidelPSF, "zernike": ZernikePSF, "motion": MotionPSF,
            "phase_mask": PhaseMaskPSF}


PSF_TYPE_NAMES = ("gaussian", "seidel", "zernike", "motion", "phase_mask")


def psf_type_class(psf_type: str) -> type:
    types = _psf_types()
    if psf_type not in types:
        raise ConfigError(unknown_name_message("psf_type", psf_type, list(types)))
    return types[psf_type]


def build_options(psf_type: str, options: dict[str, Any]):
    """The type's options dataclass from keywords; unknown keys get a "did you mean"."""
    cls = psf_type_class(psf_type)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in options:
        if key not in names:
            guess = closest(key, names)
            hint = f"; did you mean '{guess}'?" if guess else ""
            raise ConfigError(f"unknown option '{key}' for psf_type '{psf_type}'{hint} (known: {', '.join(names)})")
    return cls(**options)


class PSFSimulator:
    """Simulate one spatially varying PSF field.

    Args:
        psf_type: ``gaussian``, ``seidel``, ``zernike`` or ``motion``.
        grid_shape: (G_h, G_w) nodes; by default spanning the sensor corner to corner.
        psf_size: odd window size k in pixels.
        sensor_res: (H, W) pixels.
        seed: seeds the random types (zernike without given coefficients, motion).
        wavelengths_nm: one per channel, in channel order (RGB: red = longest first).
        pixel_pitch_um: sensor pixel pitch.
        channel_order: e.g. "RGB" (default for 3 channels) or "L" (default for 1).
        magnification: lateral magnification image/object (negative: inverted real image);
            sets ``H_obj`` (grid index -> object plane mm). Default -0.1, or with a thin lens
            (``focal_length_mm``) its magnification -v_f / s at the focus distance.
        H_img: optional 3x3 grid index -> pixel homography (default corner to corner).
        device: torch device for the computation (results are returned on the CPU).
        **options: the type's options (see ``GaussianPSF``, ``SeidelPSF``, ``ZernikePSF``,
            ``MotionPSF``).
    """

    def __init__(self, psf_type: str = "gaussian", grid_shape=(9, 9), psf_size: int = 33, sensor_res=(512, 512),
                 seed: int = 0, wavelengths_nm=DEFAULT_WAVELENGTHS_NM, pixel_pitch_um: float = 2.0,
                 channel_order: str | None = None, magnification: float | None = None, H_img=None, device="cpu",
                 **options):
        self.psf_type = str(psf_type)
        self.grid_shape = _int_pair("grid_shape", grid_shape, minimum=1)
        self.sensor_res = _int_pair("sensor_res", sensor_res, minimum=1)
        self.psf_size = int(psf_size)
        if self.psf_size < 1 or self.psf_size % 2 == 0:
            raise ConfigError(f"psf_size must be a positive odd number of pixels, got {psf_size}")
        self.seed = int(seed)
        self.wavelengths_nm = tuple(float(w) for w in np.atleast_1d(wavelengths_nm))
        if not self.wavelengths_nm or any(not 100.0 <= w <= 20000.0 for w in self.wavelengths_nm):
            raise ConfigError(f"wavelengths_nm must be wavelengths in nm (100-20000), got {list(self.wavelengths_nm)}")
        n_ch = len(self.wavelengths_nm)
        if channel_order is None:
            channel_order = {1: "L", 3: "RGB"}.get(n_ch)
            if channel_order is None:
                raise ConfigError(f"{n_ch} wavelengths given: name the channels with channel_order")
        self.channel_order = str(channel_order)
        if len(self.channel_order) != n_ch:
            raise ConfigError(f"channel_order '{self.channel_order}' names {len(self.channel_order)} channels "
                              f"but {n_ch} wavelengths were given")
        if self.channel_order == "RGB" and not (self.wavelengths_nm[0] > self.wavelengths_nm[1] > self.wavelengths_nm[2]):
            raise ConfigError(f"wavelengths_nm {list(self.wavelengths_nm)} are not in RGB order "
                              "(red, the longest, first; blue last)")
        self.pixel_pitch_um = float(pixel_pitch_um)
        if not self.pixel_pitch_um > 0:
            raise ConfigError(f"pixel_pitch_um must be > 0, got {pixel_pitch_um}")
        self.options = build_options(self.psf_type, options)
        lens = self.options if getattr(self.options, "has_lens", False) else None
        if lens is not None:
            lens_m = lens.magnification(lens.focus_distance_m)
            if magnification is not None and not math.isclose(float(magnification), lens_m, rel_tol=1e-9):
                raise ConfigError(f"magnification {magnification} contradicts the thin lens (-v_f / s_f = {lens_m:.6g}); "
                                  "leave it out")
            magnification = lens_m
        self.magnification = -0.1 if magnification is None else float(magnification)
        if self.magnification == 0:
            raise ConfigError("magnification must be non-zero")
        self.H_img = default_H_img(self.grid_shape, self.sensor_res) if H_img is None else np.asarray(H_img, np.float64)
        if self.H_img.shape != (3, 3):
            raise ConfigError(f"H_img must be 3x3, got shape {self.H_img.shape}")
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError):
            raise ConfigError(f"unknown torch device '{device}'") from None
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device '{device}' asked for but no CUDA GPU is available")

    @classmethod
    def from_config(cls, config: dict[str, Any] | str) -> "PSFSimulator":
        """Rebuild the simulator from ``config()`` or a file's ``args`` attribute (JSON); the
        ``command`` entry written by the CLI is ignored."""
        if isinstance(config, str):
            config = json.loads(config)
        return cls(**{k: v for k, v in config.items() if k != "command"})

    @property
    def geometry(self) -> FieldGeometry:
        return FieldGeometry(self.grid_shape, self.sensor_res, self.H_img)

    def config(self) -> dict[str, Any]:
        """Every setting (JSON-able): stored as the file's ``args`` attribute."""
        return {
            "psf_type": self.psf_type, "grid_shape": list(self.grid_shape), "psf_size": self.psf_size,
            "sensor_res": list(self.sensor_res), "seed": self.seed, "wavelengths_nm": list(self.wavelengths_nm),
            "pixel_pitch_um": self.pixel_pitch_um, "channel_order": self.channel_order,
            "magnification": self.magnification, "H_img": self.H_img.tolist(),
            **_jsonable(dataclasses.asdict(self.options)),
        }

    def H_obj(self, magnification: float | None = None) -> np.ndarray:
        """Grid index -> object plane (mm): sensor offset from the axis / magnification."""
        cx, cy = self.geometry.centre
        scale = self.pixel_pitch_um * 1e-3 / (magnification or self.magnification)
        to_object = np.array([[scale, 0.0, -cx * scale], [0.0, scale, -cy * scale], [0.0, 0.0, 1.0]])
        return to_object @ self.H_img

    @property
    def depths_m(self) -> list[float] | None:
        """Object distances of a depth stack (``object_distance_m`` given as a list), else None."""
        return self.options.object_depths() if getattr(self.options, "is_stack", False) else None

    def simulate(self, progress: bool | Callable[[int], None] = False, extra_attrs: dict | None = None):
        """Compute the field: a ``PSFField``, or a ``psf.depth.DepthPSFField`` when the options ask
        for several object distances. ``progress=True`` shows a tqdm bar (units: node PSFs)."""
        generator = torch.Generator().manual_seed(self.seed)
        bar = None
        callback = progress if callable(progress) else None
        if progress is True:
            from tqdm import tqdm

            bar = tqdm(total=len(self.wavelengths_nm) * self.grid_shape[0] * self.grid_shape[1] * len(self.depths_m or [0]),
                       desc=f"{self.psf_type} PSFs", unit="psf")
            callback = bar.update
        ctx = SimulationContext(self.geometry, self.psf_size, self.wavelengths_nm, self.pixel_pitch_um,
                                generator, self.device, callback)
        try:
            psfs, attrs = self.options.simulate(ctx)
        finally:
            if bar is not None:
                bar.close()
        psfs = psfs.detach().to("cpu", torch.float64).clamp_min(0.0)
        window_energy = psfs.sum(dim=(-2, -1))  # [C, N] energy captured by the window
        if not torch.all(window_energy > 0):
            raise ConfigError(f"a {self.psf_type} PSF falls entirely outside the {self.psf_size} px window")
        psfs = psfs / window_energy[..., None, None]
        if psfs.ndim == 5:  # [C, D, N, k, k]: a depth stack
            return self._depth_stack(psfs, window_energy, attrs, extra_attrs)
        field = PSFField(
            psfs=psfs[:, None].float().contiguous(),
            grid_shape=self.grid_shape, sensor_res=self.sensor_res, H_img=self.H_img, H_obj=self.H_obj(),
            psf_type=self.psf_type, channel_order=self.channel_order, normalized=True,
            attrs={
                "wavelengths_nm": list(self.wavelengths_nm), "pixel_pitch_um": self.pixel_pitch_um,
                "seed": self.seed, "magnification": self.magnification,
                "args": json.dumps(self.config()), "generator": f"restorelab {__version__}",
                "window_energy_min": float(window_energy.min()), **attrs, **(extra_attrs or {}),
            },
        )
        field.validate()
        return field

    def _depth_stack(self, psfs, window_energy, attrs, extra_attrs):
        from psf.depth import DepthPSFField

        lens = self.options
        planes = []
        for d, depth in enumerate(self.depths_m):
            m = lens.magnification(depth)
            planes.append(PSFField(
                psfs=psfs[:, d][:, None].float().contiguous(), grid_shape=self.grid_shape, sensor_res=self.sensor_res,
                H_img=self.H_img, H_obj=self.H_obj(m), psf_type=self.psf_type, channel_order=self.channel_order,
                normalized=True,
                attrs={"wavelengths_nm": list(self.wavelengths_nm), "pixel_pitch_um": self.pixel_pitch_um,
                       "seed": self.seed, "magnification": m, "args": json.dumps(self.config()),
                       "generator": f"restorelab {__version__}", "window_energy_min": float(window_energy[:, d].min()),
                       **attrs, **(extra_attrs or {})}))
        return DepthPSFField.from_planes(planes, self.depths_m)


def _int_pair(name: str, value, minimum: int) -> tuple[int, int]:
    try:
        pair = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be two integers, got {value!r}") from None
    if len(pair) != 2 or min(pair) < minimum:
        raise ConfigError(f"{name} must be two integers >= {minimum}, got {list(value)}")
    return pair


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
