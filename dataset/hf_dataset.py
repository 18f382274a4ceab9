"""``HFDataset``: a Hugging Face dataset (local folder or Hub id) with gt/lq image columns."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dataset.base import PairedImageDataset, as_chw, check_psf_scale
from dataset.psf_keys import PSFAttacher, check_psf_keys, field_name_for, load_psf_fields
from dataset.transforms import check_layouts
from utils.errors import ConfigError, DataError
from utils.image_io import _to_float_rgb, decode_image, read_image
from utils.registry import closest


def looks_like_hub_id(path: str) -> bool:
    """``user/name``: one slash, no leading ``.``/``/``/``~``, no ``..``."""
    return path.count("/") == 1 and not path.startswith((".", "/", "~")) and ".." not in path


def load_split(path: str, split: str, revision: str | None = None, cache_dir: str | None = None):
    """``datasets.load_dataset(path, split=split)`` for a local folder or a Hub id, one-line errors."""
    import datasets

    local = Path(path).expanduser()
    if local.exists():
        source, where = str(local), f"dataset folder {path}"
        cache_dir = local_cache_dir(local, cache_dir)
    elif looks_like_hub_id(path):
        source, where = path, f"{path} (no such local folder, so read as a Hub dataset id)"
    else:
        raise DataError(f"dataset folder not found: {path} (or give a Hub id like 'user/name')")
    try:
        return datasets.load_dataset(source, split=split, revision=revision, cache_dir=cache_dir)
    except ValueError as exc:
        if "Unknown split" in str(exc):
            raise DataError(f"{where}: {exc}") from None
        raise DataError(f"cannot load {where}: {exc}") from None
    except OSError as exc:  # offline, missing repo, no data files (ConnectionError, FileNotFoundError...)
        raise DataError(f"cannot load {where}: {exc}") from None


def local_cache_dir(folder: Path, cache_dir: str | None) -> str:
    """A cache folder specific to a local dataset folder's current contents.

    ``datasets`` caches a folder whose card declares ``configs`` under a name derived from the
    folder name and the card alone, so a regenerated dataset, or another dataset folder with
    the same name and card, would be read back from the stale cache. Keying the cache on the
    absolute path and every data file's size and modification time prevents that."""
    import hashlib

    import datasets

    h = hashlib.sha256(str(folder.resolve()).encode())
    for file in sorted(p for p in folder.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)):
        stat = file.stat()
        h.update(f"{file.relative_to(folder).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    root = Path(cache_dir).expanduser() if cache_dir else Path(datasets.config.HF_DATASETS_CACHE)
    return str(root / "restorelab-local" / h.hexdigest()[:16])


def psf_folder(path: str, revision: str | None = None) -> Path:
    """The dataset's ``psfs/`` folder: local, or downloaded from the Hub dataset repo."""
    local = Path(path).expanduser()
    if local.exists():
        return local / "psfs"
    from huggingface_hub import snapshot_download

    try:
        root = snapshot_download(repo_id=path, repo_type="dataset", allow_patterns=["psfs/*"], revision=revision)
    except Exception as exc:  # offline, unauthenticated, missing repo: one line for the user
        raise DataError(f"cannot download the psfs/ folder of Hub dataset {path}: {exc}") from None
    return Path(root) / "psfs"


class HFDataset(PairedImageDataset):
    """Paired images from a Hugging Face dataset: a local folder (as written by
    ``data_gen/3.generate_dataset_synthetic.py``) or a Hub id, read with ``datasets.load_dataset``.

    YAML keys (constructor keywords)::

        type: HFDataset
        path: datasets_out/seidel  # local dataset folder, or a Hub id "user/name"
        split: train               # train | validation | test (the dataset's split names)
        gt_key: gt                 # column holding the sharp image (Image feature)
        lq_key: lq                 # column holding the degraded input
        id_key: key                # column holding the sample id (absent -> "<split>/<index>")
        phase: train               # train (random crop/flips) | val | test (fixed); the trainer sets it from the split
        crop_size: 96              # in lq pixels; train: random crop; val/test: centre crop; null: full image
        use_flip: true
        use_rot: true
        seed: 0
        skip_bad_samples: false
        revision: null             # Hub branch/tag/commit
        cache_dir: null            # datasets cache (default: HF_DATASETS_CACHE)
        psf_keys: []               # any of psf, basis_psfs, basis_coef (see dataset/psf_keys.py)
        psf_path: null             # PSF file/folder (default: the dataset's psfs/ folder)
        psf_file_key: psf_file     # column naming each sample's PSF file (datasets mixing fields)
        scale: 1                   # gt pixels per lq pixel (×2 SR: gt 2× lq's width and height)
        extra_keys: []             # more image columns returned as "map" entries (C×H×W aligned
                                   # with lq, cropped and flipped with it), e.g. [depth]

    Image columns are decoded with OpenCV (8- or 16-bit PNG, JPEG...) to float32 RGB [0, 1].
    ``extra_keys`` columns keep their own channels (1 for a grey or 16-bit map); the ``depth``
    column of a depth-aware step-3 dataset (``--scenes layered``: 16-bit PNG of millimetres) is
    returned in metres, 1×H×W float32.
    """

    def __init__(
        self,
        path: str,
        split: str = "train",
        gt_key: str = "gt",
        lq_key: str = "lq",
        id_key: str = "key",
        phase: str = "train",
        crop_size: int | list[int] | None = None,
        use_flip: bool = True,
        use_rot: bool = True,
        seed: int = 0,
        skip_bad_samples: bool = False,
        revision: str | None = None,
        cache_dir: str | None = None,
        psf_keys: list[str] | None = None,
        psf_path: str | None = None,
        psf_file_key: str = "psf_file",
        scale: int = 1,
        extra_keys: list[str] | None = None,
    ):
        import datasets

        super().__init__(phase=phase, crop_size=crop_size, use_flip=use_flip, use_rot=use_rot,
                         seed=seed, skip_bad_samples=skip_bad_samples, scale=scale)
        self.path, self.split = str(path), split
        table = load_split(self.path, split, revision=revision, cache_dir=cache_dir)
        columns = list(table.column_names)
        for option, column in (("gt_key", gt_key), ("lq_key", lq_key)):
            if column not in columns:
                guess = closest(column, columns)
                hint = f"; did you mean {option}: {guess}?" if guess else ""
                raise DataError(f"{self.path} ({split}): no column '{column}' for {option}{hint} "
                                f"(columns: {', '.join(columns)})")
        if len(table) == 0:
            raise DataError(f"{self.path}: split '{split}' has no samples")
        self.gt_key, self.lq_key = gt_key, lq_key
        self.id_key = id_key if id_key in columns else None
        self.extra_keys = self._check_extra_keys(extra_keys, table, columns, psf_keys)
        self.layouts = check_layouts({k: "map" for k in self.extra_keys})
        # Raw bytes: we decode ourselves (see decode_image); non-image columns stay as they are.
        for column in (gt_key, lq_key, *self.extra_keys):
            feature = table.features[column]
            if isinstance(feature, datasets.Image):
                table = table.cast_column(column, datasets.Image(decode=False))
        self.table = table
        self.psf_file_key = psf_file_key if psf_file_key in columns else None
        if check_psf_keys(psf_keys):
            check_psf_scale(psf_keys, self.scale)
            fields = load_psf_fields(psf_path if psf_path is not None else psf_folder(self.path, revision))
            if self.psf_file_key is None and len(fields) > 1:
                raise DataError(f"{self.path}: {len(fields)} PSF files ({', '.join(fields)}) but no "
                                f"'{psf_file_key}' column says which degraded each sample; set psf_file_key")
            self.psf_attacher = PSFAttacher(fields, psf_keys)
            if self.psf_file_key is not None:  # resolve every sample's field once, up front
                where = f"{self.path} column '{self.psf_file_key}'"
                self._field_names = [field_name_for(v, fields, where) for v in list(table[self.psf_file_key])]

    def _check_extra_keys(self, extra_keys, table, columns, psf_keys) -> list[str]:
        import datasets

        from dataset.psf_keys import PSF_KEYS

        if extra_keys is None:
            return []
        if isinstance(extra_keys, str) or not all(isinstance(k, str) for k in extra_keys):
            raise ConfigError(f"extra_keys must be a list of column names like [depth], got {extra_keys!r}")
        taken = {"gt", "lq", "key", *PSF_KEYS, *(psf_keys or [])}
        for column in extra_keys:
            if column not in columns:
                guess = closest(column, columns)
                hint = f"; did you mean {guess}?" if guess else ""
                raise DataError(f"{self.path} ({self.split}): no column '{column}' for extra_keys{hint} "
                                f"(columns: {', '.join(columns)})")
            if column in taken or column in (self.gt_key, self.lq_key):
                raise ConfigError(f"extra_keys: '{column}' is already a sample entry; name another column")
            if not isinstance(table.features[column], datasets.Image):
                raise ConfigError(f"extra_keys takes image columns (maps aligned with lq, e.g. depth); "
                                  f"'{column}' is {table.features[column]}")
        if len(set(extra_keys)) != len(extra_keys):
            raise ConfigError(f"extra_keys lists a column twice: {list(extra_keys)}")
        if extra_keys and self.scale != 1:
            raise ConfigError(f"extra_keys {list(extra_keys)} with scale {self.scale}: maps are aligned with lq, "
                              "so they need same-size gt and lq (scale 1)")
        return list(extra_keys)

    def psf_field_name(self, index: int) -> str:
        if self.psf_file_key is None:
            return next(iter(self.psf_attacher.fields))
        return self._field_names[index]

    def __len__(self) -> int:
        return len(self.table)

    def row(self, index: int) -> dict:
        return self.table[int(index)]

    def sample_key(self, index: int, row: dict | None = None) -> str:
        if self.id_key is None:
            return f"{self.split}/{index:06d}"
        return str((row or self.row(index))[self.id_key])

    def _image(self, value, column: str, key: str) -> np.ndarray:
        name = f"'{column}' of sample '{key}' in {self.path}"
        if isinstance(value, dict):
            if value.get("bytes"):
                return decode_image(value["bytes"], name)
            if value.get("path"):
                return read_image(value["path"])
        if isinstance(value, (bytes, bytearray)):
            return decode_image(bytes(value), name)
        raise DataError(f"{name} is not an image (got {type(value).__name__})")

    def load_pair(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        row = self.row(index)
        key = self.sample_key(index, row)
        return self._image(row[self.gt_key], self.gt_key, key), self._image(row[self.lq_key], self.lq_key, key), key

    def load_sample(self, index: int, generator) -> dict:
        if not self.extra_keys:
            return super().load_sample(index, generator)
        row = self.row(index)
        key = self.sample_key(index, row)
        sample = {"gt": as_chw(self._image(row[self.gt_key], self.gt_key, key)),
                  "lq": as_chw(self._image(row[self.lq_key], self.lq_key, key)), "key": key}
        for column in self.extra_keys:
            value = self._map(row[column], column, key)
            if tuple(value.shape[-2:]) != tuple(sample["lq"].shape[-2:]):
                raise DataError(f"sample '{key}' in {self.path}: '{column}' is {value.shape[-1]}x{value.shape[-2]} "
                                f"but lq is {sample['lq'].shape[-1]}x{sample['lq'].shape[-2]} (width x height)")
            sample[column] = value
        return sample

    def _map(self, value, column: str, key: str):
        """An extra image column as C×H×W float32 (its own channels; ``depth``: metres)."""
        import cv2
        import torch

        name = f"'{column}' of sample '{key}' in {self.path}"
        data = value.get("bytes") if isinstance(value, dict) else value
        if isinstance(value, dict) and not data and value.get("path"):
            data = Path(value["path"]).read_bytes()
        if not isinstance(data, (bytes, bytearray)):
            raise DataError(f"{name} is not an image (got {type(value).__name__})")
        raw = cv2.imdecode(np.frombuffer(bytes(data), dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise DataError(f"cannot decode image {name} (corrupt or unsupported format)")
        if column == "depth":
            if raw.ndim != 2 or raw.dtype != np.uint16:
                raise DataError(f"{name}: a depth map is a one-channel 16-bit PNG of millimetres, got "
                                f"{raw.dtype} with shape {raw.shape}")
            from data_gen.depth_dataset import DEPTH_SCALE_M

            return torch.from_numpy((raw.astype(np.float64) * DEPTH_SCALE_M).astype(np.float32))[None]
        if raw.ndim == 2:
            return as_chw(_to_float_rgb(raw, 1, name))
        return as_chw(_to_float_rgb(raw, raw.shape[2] if raw.shape[2] != 4 else 3, name))
