"""A spatially varying PSF field and its HDF5 file (DESIGN.md, "PSF file (HDF5)").

``PSFField`` holds the node PSFs ``psfs [C_out, C_in, N, k, k]`` on a ``G_h × G_w`` grid
(row-major), the homographies ``H_img`` (grid index -> sensor pixel) and ``H_obj``
(grid index -> object plane, mm), and optionally the basis written by step 2
(``basis_psfs [C_out, C_in, K, k, k]``, ``basis_coef [C_out, C_in, K, N]``).

``save_psf_field`` writes float32 arrays gzip-compressed and chunked, float64 matrices,
every attribute of the schema, to a temporary file renamed into place when complete.
``load_psf_field`` validates shapes and attributes and says exactly what is wrong.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from utils import __version__
from utils.atomic import atomic_path
from utils.errors import DataError

PSF_FILENAME = "psfs.h5"

# Attributes every file carries (basis attributes only after step 2).
REQUIRED_ATTRS = ("psf_type", "grid_shape", "psf_size", "sensor_res", "channel_order", "normalized")
BASIS_ATTRS = ("basis_method", "n_basis", "explained_energy")
# Per-node metadata arrays are stored as attributes only up to this many values (HDF5 attributes
# are limited to 64 KiB); larger ones are reproducible from ``args`` and ``seed``.
MAX_ATTR_VALUES = 8192


def default_H_img(grid_shape: tuple[int, int], sensor_res: tuple[int, int]) -> np.ndarray:
    """Nodes spanning the sensor corner to corner: node (0, 0) at pixel (0, 0), node
    (G_w-1, G_h-1) at pixel (W-1, H-1). Maps (col, row, 1) -> (x, y, 1)."""
    gh, gw = grid_shape
    h, w = sensor_res
    sx = (w - 1) / (gw - 1) if gw > 1 else 0.0
    sy = (h - 1) / (gh - 1) if gh > 1 else 0.0
    # A single node column/row sits at the sensor centre.
    tx = 0.0 if gw > 1 else (w - 1) / 2
    ty = 0.0 if gh > 1 else (h - 1) / 2
    return np.array([[sx, 0.0, tx], [0.0, sy, ty], [0.0, 0.0, 1.0]], dtype=np.float64)


def grid_positions(H: np.ndarray, grid_shape: tuple[int, int]) -> np.ndarray:
    """Apply a homography to every grid index, row-major: [N, 2] (x, y)."""
    gh, gw = grid_shape
    rows, cols = np.meshgrid(np.arange(gh, dtype=np.float64), np.arange(gw, dtype=np.float64), indexing="ij")
    idx = np.stack([cols.ravel(), rows.ravel(), np.ones(gh * gw)], axis=0)
    out = H @ idx
    return (out[:2] / out[2:]).T


@dataclass
class PSFField:
    """One spatially varying PSF field (see module docstring for shapes)."""

    psfs: torch.Tensor
    grid_shape: tuple[int, int]
    sensor_res: tuple[int, int]
    H_img: np.ndarray
    H_obj: np.ndarray
    psf_type: str = "unknown"
    channel_order: str = "RGB"
    normalized: bool = True
    basis_psfs: torch.Tensor | None = None
    basis_coef: torch.Tensor | None = None
    attrs: dict[str, Any] = field(default_factory=dict)  # wavelengths_nm, pixel_pitch_um, seed, args, ...
    # Keys of ``attrs`` stored as JSON text in the file they were read from: written back as JSON
    # text, so a file round-trips in its stored form (``args = "[1, 2]"`` stays text, not an array).
    json_attrs: frozenset[str] = frozenset()

    # -- derived --------------------------------------------------------------------------
    @property
    def c_out(self) -> int:
        return self.psfs.shape[0]

    @property
    def c_in(self) -> int:
        return self.psfs.shape[1]

    @property
    def n_nodes(self) -> int:
        return self.psfs.shape[2]

    @property
    def psf_size(self) -> int:
        return self.psfs.shape[-1]

    @property
    def has_basis(self) -> bool:
        return self.basis_psfs is not None

    @property
    def n_basis(self) -> int | None:
        return None if self.basis_psfs is None else self.basis_psfs.shape[2]

    @property
    def positions(self) -> np.ndarray:
        """(x, y) sensor pixel of each node, row-major over the grid: [N, 2]."""
        return grid_positions(self.H_img, self.grid_shape)

    def node_psfs(self, row: int, col: int) -> torch.Tensor:
        """[C_out, C_in, k, k] PSF at grid node (row, col)."""
        return self.psfs[:, :, row * self.grid_shape[1] + col]

    def with_basis(self, basis_psfs: torch.Tensor, basis_coef: torch.Tensor, **attrs) -> "PSFField":
        """A copy carrying a basis (and its attributes, e.g. basis_method, explained_energy)."""
        new = replace(self, basis_psfs=basis_psfs, basis_coef=basis_coef, attrs={**self.attrs, **attrs})
        new.validate()
        return new

    # -- validation -----------------------------------------------------------------------
    def validate(self, source: str = "PSF field") -> None:
        """Raise DataError naming the first inconsistency."""

        def bad(msg: str):
            raise DataError(f"{source}: {msg}")

        p = self.psfs
        if not isinstance(p, torch.Tensor) or p.ndim != 5:
            bad(f"'psfs' must have 5 dims [C_out, C_in, N, k, k], got shape {tuple(getattr(p, 'shape', ()))}")
        c_out, c_in, n, kh, kw = p.shape
        if kh != kw or kh % 2 == 0:
            bad(f"PSFs must be square with odd size k, got {kh}x{kw}")
        if c_in not in (1, c_out):
            bad(f"C_in must be 1 (per-channel blur) or C_out={c_out} (cross-talk), got {c_in}")
        gh, gw = self.grid_shape
        if gh < 1 or gw < 1 or n != gh * gw:
            bad(f"'psfs' holds N={n} node PSFs but grid_shape ({gh}, {gw}) needs {gh * gw}")
        if len(self.channel_order) != c_out:
            bad(f"channel_order '{self.channel_order}' has {len(self.channel_order)} channels but C_out={c_out}")
        for name in ("H_img", "H_obj"):
            m = getattr(self, name)
            if np.shape(m) != (3, 3):
                bad(f"'{name}' must be 3x3, got shape {np.shape(m)}")
        if not torch.isfinite(p).all():
            bad("'psfs' contains NaN or inf")
        if self.normalized:
            sums = p.double().sum(dim=(-2, -1))
            target = 1.0 if c_in == 1 else None
            if target is not None and not torch.allclose(sums, torch.ones_like(sums), atol=1e-4):
                worst = (sums - 1).abs().max().item()
                bad(f"attribute normalized=True but a PSF sums to 1{'+' if worst > 0 else ''}{worst:.2e} off 1")
        if (self.basis_psfs is None) != (self.basis_coef is None):
            bad("'basis_psfs' and 'basis_coef' must be present together")
        if self.basis_psfs is not None:
            b, c = self.basis_psfs, self.basis_coef
            if b.ndim != 5 or tuple(b.shape[:2]) != (c_out, c_in) or tuple(b.shape[3:]) != (kh, kw):
                bad(f"'basis_psfs' must be [{c_out}, {c_in}, K, {kh}, {kw}], got {tuple(b.shape)}")
            k = b.shape[2]
            if k > n:
                bad(f"K={k} basis PSFs is more than the N={n} node PSFs")
            if tuple(c.shape) != (c_out, c_in, k, n):
                bad(f"'basis_coef' must be [{c_out}, {c_in}, {k}, {n}], got {tuple(c.shape)}")

    def to(self, device=None, dtype=None) -> "PSFField":
        """Tensors moved/cast (matrices stay float64 numpy)."""
        move = lambda t: None if t is None else t.to(device=device, dtype=dtype)  # noqa: E731
        return replace(self, psfs=move(self.psfs), basis_psfs=move(self.basis_psfs), basis_coef=move(self.basis_coef))


# -- HDF5 io -------------------------------------------------------------------------------
def _as_attr(value, as_json: bool = False):
    """An attribute value h5py can store: dicts, empty or nested or mixed lists (and any value read
    from JSON text) as JSON text; flat lists of numbers as native arrays; scalars and strings as is."""
    if isinstance(value, tuple):
        value = list(value)
    if as_json or isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, list):
        numbers = value and all(isinstance(v, (int, float, np.number)) for v in value)
        return np.asarray(value) if numbers else json.dumps(value)
    return value


def save_psf_field(psf_field: PSFField, path: str | os.PathLike) -> Path:
    """Write ``psf_field`` to ``path`` (a ``.h5`` file, or a folder -> ``folder/psfs.h5``).

    Written to a temporary file in the same folder and renamed when complete, so a crash
    never leaves a half-written file where a good one was.
    """
    import h5py

    psf_field.validate()
    path = Path(path)
    if path.suffix not in (".h5", ".hdf5"):
        path = path / PSF_FILENAME
    with atomic_path(path, suffix=".h5.tmp") as tmp, h5py.File(tmp, "w") as f:
        def put(name, tensor):
            arr = tensor.detach().cpu().numpy().astype(np.float32)
            f.create_dataset(name, data=arr, compression="gzip", compression_opts=4, chunks=True, shuffle=True)

        put("psfs", psf_field.psfs)
        f.create_dataset("positions", data=psf_field.positions.astype(np.float32))
        f.create_dataset("H_img", data=np.asarray(psf_field.H_img, dtype=np.float64))
        f.create_dataset("H_obj", data=np.asarray(psf_field.H_obj, dtype=np.float64))
        if psf_field.has_basis:
            put("basis_psfs", psf_field.basis_psfs)
            put("basis_coef", psf_field.basis_coef)
        f.attrs["psf_type"] = psf_field.psf_type
        f.attrs["grid_shape"] = np.asarray(psf_field.grid_shape, dtype=np.int64)
        f.attrs["psf_size"] = psf_field.psf_size
        f.attrs["sensor_res"] = np.asarray(psf_field.sensor_res, dtype=np.int64)
        f.attrs["channel_order"] = psf_field.channel_order
        f.attrs["normalized"] = bool(psf_field.normalized)
        f.attrs.setdefault("generator", f"restorelab {__version__}")
        for key, value in psf_field.attrs.items():
            if value is not None:
                f.attrs[key] = _as_attr(value, as_json=key in psf_field.json_attrs)
        if psf_field.has_basis:
            f.attrs["n_basis"] = psf_field.n_basis
    return path


def resolve_psf_path(path: str | os.PathLike) -> Path:
    """A PSF file path, or a folder holding ``psfs.h5``."""
    path = Path(path)
    if path.is_dir():
        path = path / PSF_FILENAME
    if not path.is_file():
        raise DataError(f"PSF file not found: {path}")
    return path


def load_psf_field(path: str | os.PathLike) -> PSFField:
    """Read and validate a PSF file (or a folder holding ``psfs.h5``)."""
    import h5py

    path = resolve_psf_path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"{path}: not a readable HDF5 file ({exc})") from None
    with f:
        if "depths_m" in f:
            raise DataError(f"{path}: a depth-aware PSF file (psfs {list(f['psfs'].shape)} = [C_out, C_in, D, N, k, k], "
                            f"depths_m {np.round(f['depths_m'][()], 4).tolist()}); read it with "
                            "psf.depth.load_depth_psf_field and pick a plane (.plane(i) or .at_depth(metres))")
        for name in ("psfs", "H_img", "H_obj"):
            if name not in f:
                raise DataError(f"{path}: missing dataset '{name}' (found: {', '.join(f.keys()) or 'none'})")
        missing = [a for a in REQUIRED_ATTRS if a not in f.attrs]
        if missing:
            raise DataError(f"{path}: missing attribute(s) {', '.join(missing)}")
        attrs = {k: _from_attr(v) for k, v in f.attrs.items()}
        json_attrs = frozenset(k for k, v in f.attrs.items() if _is_json_text(v, attrs[k]))
        psf_field = PSFField(
            psfs=torch.from_numpy(f["psfs"][()].astype(np.float32)),
            grid_shape=tuple(int(v) for v in attrs.pop("grid_shape")),
            sensor_res=tuple(int(v) for v in attrs.pop("sensor_res")),
            H_img=f["H_img"][()].astype(np.float64),
            H_obj=f["H_obj"][()].astype(np.float64),
            psf_type=str(attrs.pop("psf_type")),
            channel_order=str(attrs.pop("channel_order")),
            normalized=bool(attrs.pop("normalized")),
            basis_psfs=torch.from_numpy(f["basis_psfs"][()].astype(np.float32)) if "basis_psfs" in f else None,
            basis_coef=torch.from_numpy(f["basis_coef"][()].astype(np.float32)) if "basis_coef" in f else None,
        )
        stored_k = int(attrs.pop("psf_size"))
        attrs.pop("n_basis", None)
        psf_field.attrs = attrs
        psf_field.json_attrs = json_attrs
        positions_shape = f["positions"].shape if "positions" in f else None
    psf_field.validate(source=str(path))
    if positions_shape is not None and positions_shape != (psf_field.n_nodes, 2):
        raise DataError(f"{path}: 'positions' has shape {positions_shape}, expected ({psf_field.n_nodes}, 2)")
    if stored_k != psf_field.psf_size:
        raise DataError(f"{path}: attribute psf_size={stored_k} but 'psfs' are {psf_field.psf_size}x{psf_field.psf_size}")
    return psf_field


def _is_json_text(stored, decoded) -> bool:
    return isinstance(stored, (str, bytes)) and isinstance(decoded, (dict, list))


def _from_attr(value):
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value
