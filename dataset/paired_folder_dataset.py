"""``PairedFolderDataset``: ``root/gt/**`` and ``root/lq/**`` images matched by relative path."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dataset.base import PairedImageDataset, check_psf_scale
from dataset.psf_keys import PSFAttacher, check_psf_keys, load_psf_fields
from utils.errors import DataError
from utils.image_io import list_images, read_image


def _pair_files(gt_dir: Path, lq_dir: Path) -> list[tuple[str, Path, Path]]:
    """(key, gt file, lq file) matched by relative path without extension, sorted by key."""

    def index(folder: Path) -> dict[str, Path]:
        files: dict[str, Path] = {}
        for path in list_images(folder):
            key = path.relative_to(folder).with_suffix("").as_posix()
            if key in files:
                raise DataError(f"two images in {folder} share the name '{key}': "
                                f"{files[key].name} and {path.name}; keep one")
            files[key] = path
        return files

    gt, lq = index(gt_dir), index(lq_dir)
    if not gt:
        raise DataError(f"no images in {gt_dir}")
    if not lq:
        raise DataError(f"no images in {lq_dir}")
    only_gt, only_lq = sorted(set(gt) - set(lq)), sorted(set(lq) - set(gt))
    if only_gt or only_lq:
        parts = []
        for side, names, folder in (("gt", only_gt, gt_dir), ("lq", only_lq, lq_dir)):
            if names:
                shown = ", ".join(names[:3]) + (f" (+{len(names) - 3} more)" if len(names) > 3 else "")
                parts.append(f"{len(names)} in {folder} without a partner in the {'lq' if side == 'gt' else 'gt'} folder: {shown}")
        raise DataError("unpaired images: " + "; ".join(parts))
    return [(key, gt[key], lq[key]) for key in sorted(gt)]


class PairedFolderDataset(PairedImageDataset):
    """Paired images in two folders, matched by relative path (extension may differ).

    YAML keys (constructor keywords)::

        type: PairedFolderDataset
        root: datasets_out/mydata  # holds gt/ and lq/ (sub-folders allowed)
        gt_folder: gt              # relative to root, or absolute
        lq_folder: lq
        phase: train               # train (random crop/flips) | val | test (fixed); the trainer sets it from the split
        crop_size: 96              # in lq pixels; train: random crop; val/test: centre crop; null: full image
        use_flip: true             # train only: random horizontal + vertical flips
        use_rot: true              # train only: random transpose (90-degree rotations with flips)
        seed: 0                    # with the epoch and index, seeds every random draw
        skip_bad_samples: false    # true: an unreadable image is logged and skipped
        psf_keys: []               # any of psf, basis_psfs, basis_coef (see dataset/psf_keys.py)
        psf_path: null             # PSF file/folder for psf_keys (default: root/psfs/)
        scale: 1                   # gt pixels per lq pixel (×2 SR: gt 2× lq's width and height)

    ``key`` is the relative path without extension (``scene1/0001``). Every image is taken to
    be degraded by the one PSF field in ``psf_path`` (with the image covering its sensor).
    """

    def __init__(
        self,
        root: str,
        gt_folder: str = "gt",
        lq_folder: str = "lq",
        phase: str = "train",
        crop_size: int | list[int] | None = None,
        use_flip: bool = True,
        use_rot: bool = True,
        seed: int = 0,
        skip_bad_samples: bool = False,
        psf_keys: list[str] | None = None,
        psf_path: str | None = None,
        scale: int = 1,
    ):
        super().__init__(phase=phase, crop_size=crop_size, use_flip=use_flip, use_rot=use_rot,
                         seed=seed, skip_bad_samples=skip_bad_samples, scale=scale)
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"dataset folder not found: {self.root}")
        gt_dir, lq_dir = self.root / gt_folder, self.root / lq_folder
        for name, folder in (("gt_folder", gt_dir), ("lq_folder", lq_dir)):
            if not folder.is_dir():
                raise DataError(f"{name} not found: {folder} (expected {self.root}/{{gt,lq}}/)")
        self.pairs = _pair_files(gt_dir, lq_dir)
        if check_psf_keys(psf_keys):
            check_psf_scale(psf_keys, self.scale)
            fields = load_psf_fields(psf_path if psf_path is not None else self.root / "psfs")
            if len(fields) != 1:
                raise DataError(f"{len(fields)} PSF files found ({', '.join(fields)}); a folder dataset "
                                f"uses one: set psf_path to the file")
            self.psf_attacher = PSFAttacher(fields, psf_keys)

    def psf_field_name(self, index: int) -> str:
        return next(iter(self.psf_attacher.fields))

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def keys(self) -> list[str]:
        return [key for key, _, _ in self.pairs]

    def load_pair(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        key, gt_path, lq_path = self.pairs[index]
        return read_image(gt_path), read_image(lq_path), key
