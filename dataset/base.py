"""Shared machinery of the paired (gt, lq) datasets: seeding, aligned crops/flips, bad samples.

Every sample's randomness (crop position, flips, noise) comes from a ``torch.Generator``
seeded by ``(seed, epoch, index)`` (:func:`sample_generator`), never from a global RNG, so
a resumed run, any number of DataLoader workers and any process count see identical samples.
The trainer calls ``set_epoch(epoch)`` at the start of every epoch.

``phase`` decides what a sample looks like (the trainer sets it from the split):

* ``train``: a random ``crop_size`` crop (in lq pixels; aligned in gt, lq and every keyed
  entry, gt at ``scale``× the position), then random horizontal/vertical flips (``use_flip``),
  a random transpose (``use_rot``; with flips this covers all 8 rotations/reflections) and,
  for clips, a random time reversal (``time_reverse``).
* ``val`` / ``test``: no randomness; the full image, or the centre ``crop_size`` crop when set.

A sample is a dict of keyed tensors with declared layouts (``dataset.transforms``): ``gt`` and
``lq`` are images (C×H×W) or clips (T×C×H×W), ``gt`` ``scale``× larger than ``lq`` along H and
W; subclasses may add entries (``mask``, ``ref``, per-sample parameters) with their layouts in
``self.layouts``. One :class:`~dataset.transforms.KeyedTransform` moves them all in alignment.

Subclasses implement ``__len__`` and either ``load_pair(index) -> (gt, lq, key)`` (H×W×C
float32 arrays, T×H×W×C arrays for clips, or C×H×W / T×C×H×W tensors) or, for samples with
more entries or randomness of their own, ``load_sample(index, generator) -> dict``; with PSF
keys, ``psf_attacher`` and ``psf_field_name(index)`` (which PSF field degraded the sample);
``finish_sample`` edits a sample after crop and flips (the synthetic dataset adds its noise there).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from dataset.transforms import Geometry, KeyedTransform, check_layouts
from utils.errors import ConfigError, DataError

__all__ = ["PHASES", "Geometry", "KeyedTransform", "PairedImageDataset", "as_chw", "as_size", "check_scale",
           "sample_generator", "sample_seed"]

logger = logging.getLogger(__name__)

PHASES = ("train", "val", "test")


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 63-bit seed for one sample (SeedSequence hashing: nearby triples are unrelated)."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), int(index)]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The CPU generator every random draw of sample ``index`` in ``epoch`` comes from."""
    return torch.Generator().manual_seed(sample_seed(seed, epoch, index))


def as_size(value, name: str) -> tuple[int, int] | None:
    """``96`` or ``[96, 128]`` -> (h, w); None stays None."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        size = (value, value)
    elif isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2:
        size = (value[0], value[1])
    else:
        raise ConfigError(f"{name} must be an integer or [height, width], got {value!r}")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size):
        raise ConfigError(f"{name} must hold positive integers, got {value!r}")
    return int(size[0]), int(size[1])


def check_scale(scale) -> int:
    if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
        raise ConfigError(f"scale must be a positive integer (gt pixels per lq pixel), got {scale!r}")
    return scale


def as_chw(img: np.ndarray | torch.Tensor) -> torch.Tensor:
    """H×W×C array -> C×H×W float32 tensor, T×H×W×C -> T×C×H×W; tensors are taken as C×H×W
    (T×C×H×W) already."""
    if isinstance(img, torch.Tensor):
        return img.float()
    img = np.asarray(img)
    if img.ndim == 3:
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float()
    if img.ndim == 4:
        return torch.from_numpy(np.ascontiguousarray(img.transpose(0, 3, 1, 2))).float()
    raise DataError(f"an image array must be H×W×C (or T×H×W×C for a clip), got shape {img.shape}")


def image_layout(x: torch.Tensor, name: str, key: str) -> str:
    """``image`` for C×H×W, ``clip`` for T×C×H×W (gt and lq)."""
    if x.dim() == 3:
        return "image"
    if x.dim() == 4:
        return "clip"
    raise DataError(f"sample '{key}': {name} has shape {tuple(x.shape)}; expected C×H×W (image) or T×C×H×W (clip)")


def check_pair_sizes(gt: torch.Tensor, lq: torch.Tensor, scale: int, key: str) -> None:
    """gt must be ``scale``× lq along H and W (and as long in time when both are clips)."""
    (gh, gw), (lh, lw) = gt.shape[-2:], lq.shape[-2:]
    if (gh, gw) != (lh * scale, lw * scale):
        if scale == 1:
            raise DataError(f"sample '{key}': gt is {gw}x{gh} but lq is {lw}x{lh} (width x height); pairs must match")
        raise DataError(f"sample '{key}': gt is {gw}x{gh} but lq is {lw}x{lh} (width x height); with scale {scale} "
                        f"gt must be {lw * scale}x{lh * scale} (or lq {gw / scale:g}x{gh / scale:g})")
    if gt.dim() == 4 and lq.dim() == 4 and gt.shape[0] != lq.shape[0]:
        raise DataError(f"sample '{key}': gt has {gt.shape[0]} frames but lq has {lq.shape[0]}")


def check_psf_scale(psf_keys, scale: int) -> None:
    """PSF keys describe blur at the sensor's pixels; a ×scale pair has two pixel grids."""
    if psf_keys and scale != 1:
        raise ConfigError(f"psf_keys {list(psf_keys)} with scale {scale}: PSF keys are only available for "
                          f"scale 1 (same-size gt and lq)")


class PairedImageDataset(torch.utils.data.Dataset):
    """Base class: seeded aligned augmentation + bad-sample policy (see module docstring)."""

    layouts: Mapping[str, str] = {}  # layouts of entries beyond gt/lq (e.g. {"mask": "mask"})

    def __init__(
        self,
        *,
        phase: str,
        crop_size,
        use_flip: bool,
        use_rot: bool,
        seed: int,
        skip_bad_samples: bool,
        scale: int = 1,
        time_reverse: bool = False,
    ):
        if phase not in PHASES:
            raise ConfigError(f"phase must be one of {', '.join(PHASES)}, got {phase!r}")
        self.phase = phase
        self.crop_size = as_size(crop_size, "crop_size")
        self.use_flip = bool(use_flip)
        self.use_rot = bool(use_rot)
        self.time_reverse = bool(time_reverse)
        self.scale = check_scale(scale)
        self.seed = int(seed)
        self.skip_bad_samples = bool(skip_bad_samples)
        self.epoch = 0
        self.skipped: dict[str, str] = {}  # sample index -> reason (this process only)
        self.psf_attacher = None  # a dataset.psf_keys.PSFAttacher when PSF keys are requested
        self.layouts = check_layouts(type(self).layouts)

    # -- subclass interface ----------------------------------------------------------------
    def load_pair(self, index: int) -> tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor, str]:
        """(gt, lq, key): H×W×C float32 RGB arrays (T×H×W×C for clips, or C×H×W / T×C×H×W
        tensors) in [0, 1], gt ``scale``× lq along H and W, and a sample id."""
        raise NotImplementedError

    def load_sample(self, index: int, generator: torch.Generator) -> dict:
        """The uncropped sample: ``gt``, ``lq`` (C×H×W or T×C×H×W tensors), ``key`` and any entry
        declared in ``self.layouts``. Default: from :meth:`load_pair` (no draws)."""
        gt, lq, key = self.load_pair(index)
        return {"gt": as_chw(gt), "lq": as_chw(lq), "key": key}

    # -- public ------------------------------------------------------------------------------
    @property
    def random(self) -> bool:
        """Whether samples are random (training) or fixed (validation/test)."""
        return self.phase == "train"

    @property
    def transform(self) -> KeyedTransform:
        """The geometry every key of a sample goes through (random in training only)."""
        return KeyedTransform(self.crop_size, self.scale, self.use_flip, self.use_rot, self.time_reverse,
                              random=self.random)

    def set_epoch(self, epoch: int) -> None:
        """Called by the trainer at each epoch start: reseeds every sample's augmentation."""
        self.epoch = int(epoch)

    def generator(self, index: int) -> torch.Generator:
        """Sample ``index``'s generator. Validation/test samples ignore the epoch (fixed forever)."""
        return sample_generator(self.seed, self.epoch if self.random else 0, index)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"sample index {index} out of range for {len(self)} samples")
        if not self.skip_bad_samples:
            return self.make_sample(index)
        # Skip unreadable samples: the next good one stands in (deterministically).
        for offset in range(len(self)):
            candidate = (index + offset) % len(self)
            try:
                return self.make_sample(candidate, rng_index=index)
            except DataError as exc:
                if str(candidate) not in self.skipped:
                    self.skipped[str(candidate)] = str(exc)
                    logger.warning("skipping bad sample %d (%d skipped so far): %s", candidate, len(self.skipped), exc)
        raise DataError(f"every one of the {len(self)} samples is unreadable (first: {next(iter(self.skipped.values()))})")

    def sample_layouts(self, sample: Mapping) -> dict[str, str]:
        """Layout of every tensor entry: gt/lq by their number of dims, the rest from ``self.layouts``."""
        key = str(sample.get("key", "?"))
        layouts = {name: image_layout(sample[name], name, key) for name in ("gt", "lq")}
        return {**layouts, **self.layouts}

    def make_sample(self, index: int, rng_index: int | None = None) -> dict:
        """Load, crop and flip sample ``index`` (randomness from ``rng_index``'s generator)."""
        generator = self.generator(index if rng_index is None else rng_index)
        sample = self.load_sample(index, generator)
        layouts = self.sample_layouts(sample)
        check_pair_sizes(sample["gt"], sample["lq"], self.scale, sample["key"])
        sample, geometry = self.transform(sample, layouts, generator)
        if self.psf_attacher is not None:
            self.psf_attacher.attach(sample, self.psf_field_name(index), geometry)
        self.finish_sample(sample, index, geometry, generator)
        return sample

    def psf_field_name(self, index: int) -> str:
        """Name (in ``psf_attacher.fields``) of the PSF field that degraded sample ``index``."""
        raise NotImplementedError

    def finish_sample(self, sample: dict, index: int, geometry: Geometry, generator: torch.Generator) -> None:
        """Hook for subclasses (noise...): edit ``sample`` in place after crop, flips and PSF keys."""

    def draw_geometry(self, image_hw, generator: torch.Generator, key: str, clip: bool = False) -> Geometry:
        """Crop box (lq pixels) + flips for one sample, drawn in a fixed order from ``generator``."""
        return self.transform.draw(image_hw, generator, key, clip=clip)
