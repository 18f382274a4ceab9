"""Clips as a Hugging Face dataset: one row per frame, columns ``clip`` (the clip key), ``frame``
(its index in the clip), ``frame_name``, ``gt`` and ``lq`` (PNG images). Plain parquet folders,
so ``datasets.load_dataset(folder)``, the Hub viewer and streaming work unchanged.

* ``write_clip_dataset(samples, folder, split)``: writes clips (any dataset giving ``gt``/``lq``
  T×C×H×W and ``key``: SyntheticVideoDataset, VideoFolderDataset in a val phase, …) as
  ``folder/data/{split}-00000-of-00001.parquet`` (8-bit PNG frames, lossless for 8-bit data).
* ``VideoHFDataset`` (``type: VideoHFDataset``): reads them back as clips (frames ordered by
  ``frame``), with the same windows, crops and augmentation as VideoFolderDataset.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from dataset.base import PairedImageDataset
from utils.errors import ConfigError, DataError
from utils.image_io import decode_image, quantize_levels


def _png(frame: torch.Tensor) -> bytes:
    from PIL import Image

    arr = quantize_levels(frame, 8).to(torch.uint8).permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def write_clip_dataset(samples, folder: str | Path, split: str = "train") -> Path:
    """Write every sample (``gt``/``lq`` clips + ``key``) of ``samples`` as one parquet split."""
    import datasets

    rows = {"clip": [], "frame": [], "frame_name": [], "gt": [], "lq": []}
    for sample in samples:
        gt, lq = sample["gt"], sample["lq"]
        if gt.dim() != 4 or lq.dim() != 4 or gt.shape[0] != lq.shape[0]:
            raise DataError(f"clip '{sample.get('key')}': gt/lq must be T×C×H×W clips of as many frames")
        names = sample.get("frame_names") or [f"{t:08d}.png" for t in range(gt.shape[0])]
        for t in range(gt.shape[0]):
            rows["clip"].append(str(sample["key"]))
            rows["frame"].append(t)
            rows["frame_name"].append(str(names[t]))
            rows["gt"].append({"bytes": _png(gt[t]), "path": None})
            rows["lq"].append({"bytes": _png(lq[t]), "path": None})
    features = datasets.Features({"clip": datasets.Value("string"), "frame": datasets.Value("int32"),
                                  "frame_name": datasets.Value("string"), "gt": datasets.Image(),
                                  "lq": datasets.Image()})
    ds = datasets.Dataset.from_dict(rows, features=features)
    out = Path(folder) / "data" / f"{split}-00000-of-00001.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(out))
    return out


class VideoHFDataset(PairedImageDataset):
    """YAML keys::

        type: VideoHFDataset
        path: data/my_clips        # folder written by write_clip_dataset (or a Hub id)
        split: train
        num_frames: 7              # training window (null: whole clips); eval: whole clips
        scale: 4
        phase: train
        crop_size: 64              # LR pixels
        use_flip: true
        use_rot: true
        time_reverse: true
        seed: 0
    """

    def __init__(self, path: str, split: str = "train", num_frames: int | None = 7, scale: int = 4,
                 phase: str = "train", crop_size=None, use_flip: bool = True, use_rot: bool = True,
                 time_reverse: bool = True, seed: int = 0, skip_bad_samples: bool = False):
        super().__init__(phase=phase, crop_size=crop_size, use_flip=use_flip, use_rot=use_rot, seed=seed,
                         skip_bad_samples=skip_bad_samples, scale=scale, time_reverse=time_reverse)
        from dataset.hf_dataset import load_split

        if num_frames is not None and (not isinstance(num_frames, int) or num_frames < 1):
            raise ConfigError(f"num_frames must be a positive integer or null, got {num_frames!r}")
        self.data = load_split(path, split)
        missing = [c for c in ("clip", "frame", "gt", "lq") if c not in self.data.column_names]
        if missing:
            raise DataError(f"{path} ({split}): not a clip dataset, missing columns {missing}")
        self.num_frames = num_frames
        clips: dict[str, list[tuple[int, int]]] = {}
        for row, (clip, frame) in enumerate(zip(self.data["clip"], self.data["frame"])):
            clips.setdefault(clip, []).append((int(frame), row))
        self.rows = {c: [r for _, r in sorted(v)] for c, v in clips.items()}
        self.keys_ = list(self.rows)

    def __len__(self) -> int:
        return len(self.keys_)

    def _image(self, value, name: str) -> torch.Tensor:
        raw = value.get("bytes") if isinstance(value, dict) else None
        arr = decode_image(raw, name) if raw is not None else np.asarray(value.convert("RGB"), np.float32) / 255.0
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))

    def load_sample(self, index: int, generator: torch.Generator) -> dict:
        clip = self.keys_[index]
        rows = self.rows[clip]
        if self.random and self.num_frames is not None:
            if len(rows) < self.num_frames:
                raise DataError(f"clip '{clip}' has {len(rows)} frames, fewer than num_frames {self.num_frames}")
            start = int(torch.randint(len(rows) - self.num_frames + 1, (1,), generator=generator))
            rows = rows[start:start + self.num_frames]
        table = self.data.select(rows).cast_column("gt", _raw_image()).cast_column("lq", _raw_image())
        gt = torch.stack([self._image(v, f"{clip}/gt") for v in table["gt"]])
        lq = torch.stack([self._image(v, f"{clip}/lq") for v in table["lq"]])
        sample = {"gt": gt, "lq": lq, "key": clip}
        if not self.random and "frame_name" in table.column_names:
            sample["frame_names"] = list(table["frame_name"])
        return sample


def _raw_image():
    import datasets

    return datasets.Image(decode=False)
