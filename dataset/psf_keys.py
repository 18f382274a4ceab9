"""PSF entries of a sample (``psf``, ``basis_psfs``, ``basis_coef``) for PSF-aware networks.

A dataset yields exactly the keys listed in its ``psf_keys`` option (empty by default). A model
asks for them through its network's ``input_keys``: ``psf_keys_for(net.input_keys)`` gives the
list to put in the dataset options. Shapes (per sample, before batching)::

    basis_psfs  [C_out, C_in, K, k, k]  the field's basis PSFs (step 2), transformed like the image
    basis_coef  [C_out, C_in, K, h, w]  per-pixel coefficients (utils.sv_renderer.coef_maps),
                                        cropped and flipped exactly like gt/lq
    psf         [C_out, C_in, k, k]     the PSF at the geometric centre of the crop (bilinear
                                        between the node PSFs, utils.sv_renderer.interpolated_psf),
                                        flipped like the image

so that ``lq ≈ Σ_K basis_psfs[K] ∗ (basis_coef[K] ⊙ gt)`` (scatter form) holds for the sample
itself, away from the crop border (whose blur came from pixels outside the crop). A flipped or
transposed sample gets flipped/transposed kernels: the mirrored scene was blurred by the
mirrored PSFs. A field without a basis is used at full rank: its N node PSFs with one-hot node
coefficients (K = N), which interpolates exactly like the renderer. When a dataset mixes
several PSF fields, K and k are padded to the largest in the dataset (zero basis elements,
zero kernel border), so samples batch together.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

from dataset.transforms import Geometry
from psf.field import PSFField
from utils.errors import ConfigError, DataError

PSF_KEYS = ("psf", "basis_psfs", "basis_coef")


def psf_keys_for(input_keys: Iterable[str]) -> list[str]:
    """The dataset ``psf_keys`` a network with these ``input_keys`` needs (in PSF_KEYS order)."""
    wanted = set(input_keys)
    return [key for key in PSF_KEYS if key in wanted]


def check_psf_keys(psf_keys) -> tuple[str, ...]:
    if psf_keys is None:
        return ()
    if isinstance(psf_keys, str):
        psf_keys = [psf_keys]
    unknown = [k for k in psf_keys if k not in PSF_KEYS]
    if unknown:
        raise ConfigError(f"psf_keys: unknown key(s) {', '.join(map(repr, unknown))} (valid: {', '.join(PSF_KEYS)})")
    return tuple(k for k in PSF_KEYS if k in set(psf_keys))


def pad_kernels(kernels: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad odd ``[..., k, k]`` kernels to ``size`` (odd), keeping the centre at size//2."""
    k = kernels.shape[-1]
    if k == size:
        return kernels
    p = (size - k) // 2
    return torch.nn.functional.pad(kernels, (p, p, p, p))


class PSFAttacher:
    """Adds the requested PSF keys to samples cut from images degraded by known PSF fields.

    ``fields``: name -> PSFField (every field the dataset uses, so K and k are padded to a
    common size up front). Image pixel (x, y) is sensor pixel (x, y): the images were rendered
    at the sensor's pitch (``utils.sv_renderer`` convention), so a crop's coefficients are
    ``coef_maps(field, h, w, origin=(top, left))``.
    """

    def __init__(self, fields: Mapping[str, PSFField], psf_keys):
        self.psf_keys = check_psf_keys(psf_keys)
        if not fields:
            raise DataError("psf_keys were requested but the dataset has no PSF field")
        self.fields = dict(fields)
        c_in = {f.c_in for f in self.fields.values()}
        c_out = {f.c_out for f in self.fields.values()}
        if len(c_in) > 1 or len(c_out) > 1:
            raise DataError(f"the dataset's PSF fields mix channel layouts (C_out {sorted(c_out)}, C_in {sorted(c_in)})")
        self.n_basis = max(f.n_basis if f.has_basis else f.n_nodes for f in self.fields.values())
        self.psf_size = max(f.psf_size for f in self.fields.values())
        self._basis = {name: self._padded_basis(f) for name, f in self.fields.items()}

    def _padded_basis(self, field: PSFField) -> torch.Tensor:
        basis = field.basis_psfs if field.has_basis else field.psfs  # full rank: the node PSFs
        basis = pad_kernels(basis.float(), self.psf_size)
        return torch.nn.functional.pad(basis, (0, 0, 0, 0, 0, self.n_basis - basis.shape[2])).contiguous()

    def attach(self, sample: dict, name: str, geometry: Geometry) -> None:
        """Add the requested keys to ``sample`` (cut from its image by ``geometry``)."""
        from utils.sv_renderer import coef_maps, interpolated_psf

        field = self.fields[name]
        if "basis_psfs" in self.psf_keys:
            sample["basis_psfs"] = geometry.apply_transform(self._basis[name])
        if "basis_coef" in self.psf_keys:
            coef = coef_maps(field, geometry.height, geometry.width, origin=(geometry.top, geometry.left))
            coef = torch.nn.functional.pad(coef.float(), (0, 0, 0, 0, 0, self.n_basis - coef.shape[2]))
            sample["basis_coef"] = geometry.apply_transform(coef)
        if "psf" in self.psf_keys:
            # The exact interpolated PSF at the crop's geometric centre (flips keep the centre).
            x = geometry.left + (geometry.width - 1) / 2
            y = geometry.top + (geometry.height - 1) / 2
            psf = pad_kernels(interpolated_psf(field, x, y).float(), self.psf_size)
            sample["psf"] = geometry.apply_transform(psf)


def load_psf_fields(path) -> dict[str, PSFField]:
    """Every PSF file under ``path`` (a ``.h5`` file, or a folder searched recursively), by name
    (the path relative to the folder, e.g. ``psfs.h5``)."""
    from pathlib import Path

    from psf.field import load_psf_field

    path = Path(path)
    if path.is_file():
        return {path.name: load_psf_field(path)}
    if not path.is_dir():
        raise DataError(f"PSF file or folder not found: {path}")
    files = sorted(p for p in path.rglob("*") if p.suffix in (".h5", ".hdf5") and not p.name.startswith("."))
    if not files:
        raise DataError(f"no PSF file (*.h5) in {path}")
    return {p.relative_to(path).as_posix(): load_psf_field(p) for p in files}


def field_name_for(value, fields: Mapping[str, PSFField], where: str) -> str:
    """Resolve a per-sample PSF reference (``psfs.h5``, ``psfs/psfs.h5``, ``sub/a.h5``) to a field name."""
    value = str(value).replace("\\", "/")
    for candidate in (value, value.removeprefix("psfs/")):
        if candidate in fields:
            return candidate
    raise DataError(f"{where} names PSF file '{value}', which is not among {', '.join(fields)}")
