"""Shared machinery of the paired (gt, lq) datasets: seeding, aligned crops/flips, bad samples.

Every sample's randomness (crop position, flips, noise) comes from a ``torch.Generator``
seeded by ``(seed, epoch, index)`` (:func:`sample_generator`), never from a global RNG, so
a resumed run, any number of DataLoader workers and any process count see identical samples.
The trainer calls ``set_epoch(epoch)`` at the start of every epoch.

``phase`` decides what a sample looks like:

* ``train``: a random ``crop_size`` crop (aligned in gt, lq and the PSF maps), then random
  horizontal/vertical flips (``use_flip``) and a random transpose (``use_rot``; with flips this
  covers all 8 rotations/reflections).
* ``val`` / ``test``: no randomness; the full image, or the centre ``crop_size`` crop when set.

Subclasses implement ``__len__``, ``load_pair(index) -> (gt, lq, key)`` (H×W×C float32
arrays or C×H×W tensors); with PSF keys, ``psf_attacher`` and ``psf_field_name(index)``
(which PSF field degraded the sample); ``finish_sample`` edits a sample after crop and flips
(the synthetic dataset adds its noise there).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from utils.errors import ConfigError, DataError

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


@dataclass(frozen=True)
class Geometry:
    """Where a sample was cut from its image and how it was flipped.

    Applied in this order: crop ``[top:top+height, left:left+width]``, then horizontal flip,
    vertical flip, transpose (swap H and W). The same geometry is applied to gt, lq and
    every per-pixel map; PSF kernels get the matching kernel transform (a flipped image was
    blurred by the flipped PSF).
    """

    top: int
    left: int
    height: int
    width: int
    hflip: bool = False
    vflip: bool = False
    transpose: bool = False

    @property
    def is_identity_transform(self) -> bool:
        return not (self.hflip or self.vflip or self.transpose)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Crop + flip a ``[..., H, W]`` tensor (images and per-pixel coefficient maps)."""
        x = x[..., self.top:self.top + self.height, self.left:self.left + self.width]
        return self.apply_transform(x)

    def apply_transform(self, x: torch.Tensor) -> torch.Tensor:
        """Flip/transpose only (no crop): also the transform for PSF kernels ``[..., k, k]``."""
        if self.hflip:
            x = x.flip(-1)
        if self.vflip:
            x = x.flip(-2)
        if self.transpose:
            x = x.transpose(-1, -2)
        return x.contiguous()

    def source_pixel(self, row: float, col: float) -> tuple[float, float]:
        """Image (row, col) of a (possibly fractional) sample pixel (row, col)."""
        if self.transpose:
            row, col = col, row
        h, w = self.height, self.width
        if self.vflip:
            row = h - 1 - row
        if self.hflip:
            col = w - 1 - col
        return self.top + row, self.left + col


def as_chw(img: np.ndarray | torch.Tensor) -> torch.Tensor:
    """H×W×C array -> C×H×W float32 tensor; tensors are taken as C×H×W already."""
    if isinstance(img, torch.Tensor):
        return img.float()
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float()


class PairedImageDataset(torch.utils.data.Dataset):
    """Base class: seeded aligned augmentation + bad-sample policy (see module docstring)."""

    def __init__(
        self,
        *,
        phase: str,
        crop_size,
        use_flip: bool,
        use_rot: bool,
        seed: int,
        skip_bad_samples: bool,
    ):
        if phase not in PHASES:
            raise ConfigError(f"phase must be one of {', '.join(PHASES)}, got {phase!r}")
        self.phase = phase
        self.crop_size = as_size(crop_size, "crop_size")
        self.use_flip = bool(use_flip)
        self.use_rot = bool(use_rot)
        self.seed = int(seed)
        self.skip_bad_samples = bool(skip_bad_samples)
        self.epoch = 0
        self.skipped: dict[str, str] = {}  # sample index -> reason (this process only)
        self.psf_attacher = None  # a dataset.psf_keys.PSFAttacher when PSF keys are requested

    # -- subclass interface ----------------------------------------------------------------
    def load_pair(self, index: int) -> tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor, str]:
        """(gt, lq, key): H×W×C float32 RGB arrays (or C×H×W tensors) in [0, 1] and a sample id."""
        raise NotImplementedError

    # -- public ------------------------------------------------------------------------------
    @property
    def random(self) -> bool:
        """Whether samples are random (training) or fixed (validation/test)."""
        return self.phase == "train"

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

    def make_sample(self, index: int, rng_index: int | None = None) -> dict:
        """Load, crop and flip sample ``index`` (randomness from ``rng_index``'s generator)."""
        generator = self.generator(index if rng_index is None else rng_index)
        gt, lq, key = self.load_pair(index)
        gt, lq = as_chw(gt), as_chw(lq)
        if gt.shape != lq.shape:
            raise DataError(f"sample '{key}': gt is {gt.shape[-1]}x{gt.shape[-2]} but lq is "
                            f"{lq.shape[-1]}x{lq.shape[-2]} (width x height); pairs must match")
        geometry = self.draw_geometry(gt.shape[-2:], generator, key)
        sample = {"gt": geometry.apply(gt), "lq": geometry.apply(lq), "key": key}
        if self.psf_attacher is not None:
            self.psf_attacher.attach(sample, self.psf_field_name(index), geometry)
        self.finish_sample(sample, index, geometry, generator)
        return sample

    def psf_field_name(self, index: int) -> str:
        """Name (in ``psf_attacher.fields``) of the PSF field that degraded sample ``index``."""
        raise NotImplementedError

    def finish_sample(self, sample: dict, index: int, geometry: Geometry, generator: torch.Generator) -> None:
        """Hook for subclasses (noise...): edit ``sample`` in place after crop, flips and PSF keys."""

    def draw_geometry(self, image_hw, generator: torch.Generator, key: str) -> Geometry:
        """Crop box + flips for one sample, drawn in a fixed order from ``generator``."""
        h, w = int(image_hw[0]), int(image_hw[1])
        if self.crop_size is None:
            ch, cw = h, w
        else:
            ch, cw = self.crop_size
            if ch > h or cw > w:
                raise DataError(f"sample '{key}' is {w}x{h} (width x height), smaller than crop_size "
                                f"{cw}x{ch}; lower crop_size or remove the image")
        if not self.random:
            return Geometry((h - ch) // 2, (w - cw) // 2, ch, cw)
        top = int(torch.randint(0, h - ch + 1, (1,), generator=generator))
        left = int(torch.randint(0, w - cw + 1, (1,), generator=generator))
        hflip = vflip = transpose = False
        if self.use_flip:
            hflip, vflip = (bool(b) for b in torch.rand(2, generator=generator) < 0.5)
        if self.use_rot and ch == cw:  # a transpose must keep the batch shape
            transpose = bool(torch.rand(1, generator=generator) < 0.5)
        return Geometry(top, left, ch, cw, hflip, vflip, transpose)
