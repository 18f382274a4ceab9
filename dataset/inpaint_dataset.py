"""``InpaintingDataset``: images with free-form holes (``gt``, ``lq = gt·mask``, ``mask``, and
optionally a reference ``ref`` + ``ref_valid``).

YAML keys (constructor keywords)::

    type: InpaintingDataset
    images: builtin            # "builtin" (skimage.data) or a folder of images
    names: null                # only these images
    exclude: [astronaut, camera, coffee]
    image_size: [256, 256]     # each image centre-cropped + resized (area) to this size
    masks: mat_256_small       # a generator of utils.masks (mat_256, mat_512[_small], lama_thick, ...)
    mask_folder: null          # ... or a folder of mask images (255 = known); overrides ``masks``
    mask_seeds: [0, 1, 2, 3, 4]  # val/test: the fixed masks (one sample per image × seed)
    samples_per_image: 1       # train: samples per image per epoch
    ref: none                  # none | same_image (a flipped/shifted copy of the gt crop: holds the missing texture)
    ref_prob: 1.0              # train: probability that a sample has its reference (else zeros, ref_valid 0)
    phase: train               # set by the trainer
    crop_size: 128
    use_flip: true
    use_rot: true
    seed: 0

Masks follow DESIGN.md (1 = known, 0 = hole), B×1×H×W once batched. Training masks are drawn per
sample from the seeded generator: a numpy seed taken from the sample's (seed, epoch, index)
generator, so any worker count and a resume see the same masks. Every mask is made at the source
image's size (MAT masks resized, nearest, when the sizes differ) and cropped with the image, so
training crops see holes at the pixel scale of the evaluation masks. Validation/test samples pair every image with every
seed of ``mask_seeds`` (key ``<image>_m<seed>``) or every file of ``mask_folder`` (key
``<image>_<mask name>``): fixed forever. A sample without its reference carries ``ref`` = zeros
and ``ref_valid`` = 0 (the flag, never silent zeros).
"""
from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

import numpy as np
import torch

from dataset.base import Geometry, PairedImageDataset, as_size
from dataset.sources import fit_to_size, list_sources, load_source
from utils import masks as mask_lib
from utils.errors import ConfigError

REF_MODES = ("none", "same_image")


class InpaintingDataset(PairedImageDataset):
    layouts = MappingProxyType({"mask": "mask"})

    def __init__(self, images: str = "builtin", names: list[str] | None = None, exclude: list[str] | None = None,
                 image_size: int | list[int] | None = 256, masks: str = "mat_256_small",
                 mask_folder: str | None = None, mask_seeds: list[int] | None = None, samples_per_image: int = 1,
                 ref: str = "none", ref_prob: float = 1.0, phase: str = "train",
                 crop_size: int | list[int] | None = None, use_flip: bool = True, use_rot: bool = True,
                 seed: int = 0, skip_bad_samples: bool = False):
        super().__init__(phase=phase, crop_size=crop_size, use_flip=use_flip, use_rot=use_rot, seed=seed,
                         skip_bad_samples=skip_bad_samples)
        if masks not in mask_lib.MASK_KINDS:
            raise ConfigError(f"masks must be one of {', '.join(mask_lib.MASK_KINDS)}, got {masks!r}")
        if ref not in REF_MODES:
            raise ConfigError(f"ref must be one of {', '.join(REF_MODES)}, got {ref!r}")
        if not 0.0 <= float(ref_prob) <= 1.0:
            raise ConfigError(f"ref_prob must be in [0, 1], got {ref_prob}")
        if not isinstance(samples_per_image, int) or samples_per_image < 1:
            raise ConfigError(f"samples_per_image must be a positive integer, got {samples_per_image!r}")
        self.mask_kind, self.ref, self.ref_prob = masks, ref, float(ref_prob)
        self.samples_per_image = samples_per_image
        self.image_size = as_size(image_size, "image_size")
        self.keys_, self.images = [], []
        for name, path in list_sources(images, names, exclude):
            img = load_source(name, path)
            if self.image_size is not None:
                img = fit_to_size(img, self.image_size)
            img = np.round(np.clip(img, 0, 1) * 255) / 255  # 8-bit levels, as a stored PNG
            self.keys_.append(name)
            self.images.append(torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float())
        if not self.images:
            raise ConfigError("InpaintingDataset: no source image")
        self.mask_files = mask_lib.read_mask_folder(mask_folder) if mask_folder else None
        self.mask_seeds = list(range(5)) if mask_seeds is None else [int(s) for s in mask_seeds]
        if not self.random and not self.mask_files and not self.mask_seeds:
            raise ConfigError("InpaintingDataset: validation/test needs mask_seeds or mask_folder")

    # -- indexing ----------------------------------------------------------------------------------
    def per_image(self) -> int:
        if self.random:
            return self.samples_per_image
        return len(self.mask_files) if self.mask_files else len(self.mask_seeds)

    def __len__(self) -> int:
        return len(self.images) * self.per_image()

    def sample_key(self, index: int) -> str:
        i, j = divmod(index, self.per_image())
        if self.random:
            return f"{self.keys_[i]}_{j}"
        if self.mask_files:
            return f"{self.keys_[i]}_{self.mask_files[j].stem}"
        return f"{self.keys_[i]}_m{self.mask_seeds[j]}"

    def load_sample(self, index: int, generator: torch.Generator) -> dict:
        """The whole image with its mask made at the image's size (training: drawn; val/test:
        fixed), so a crop keeps the holes' pixel scale of the evaluation masks."""
        i = index // self.per_image()
        gt = self.images[i]
        hw = tuple(gt.shape[-2:])
        if self.random:
            seed = int(torch.randint(0, 2 ** 31 - 1, (1,), generator=generator))
            if self.mask_files:
                m = self.resized(mask_lib.read_mask(self.mask_files[seed % len(self.mask_files)]), hw)
            else:
                m = mask_lib.make_mask(self.mask_kind, seed, hw)
        else:
            m = self.fixed_mask(index, hw)
        mask = torch.from_numpy(np.ascontiguousarray(m)).float()[None]
        return {"gt": gt, "lq": gt * mask, "mask": mask, "key": self.sample_key(index)}

    @staticmethod
    def resized(m: np.ndarray, hw) -> np.ndarray:
        if m.shape == tuple(hw):
            return m
        import cv2

        return cv2.resize(m, (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST)

    def fixed_mask(self, index: int, hw) -> np.ndarray:
        j = index % self.per_image()
        if self.mask_files:
            return self.resized(mask_lib.read_mask(self.mask_files[j]), hw)
        return mask_lib.make_mask(self.mask_kind, self.mask_seeds[j], tuple(hw))

    def finish_sample(self, sample: dict, index: int, geometry: Geometry, generator: torch.Generator) -> None:
        gt = sample["gt"]
        sample["lq"] = gt * sample["mask"]  # exact after the crop and flips
        if self.ref != "none":
            ref = self.make_ref(gt, generator)
            valid = True
            if self.random and self.ref_prob < 1.0:
                valid = bool(torch.rand((), generator=generator) < self.ref_prob)
            sample["ref"] = ref if valid else torch.zeros_like(ref)
            sample["ref_valid"] = torch.tensor(1.0 if valid else 0.0)

    def make_ref(self, gt: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``same_image``: the gt crop flipped left-right and cyclically shifted by a quarter of
        its size (train: random flips and shift) — the missing texture, not aligned."""
        h, w = gt.shape[-2:]
        if self.random:
            flips = torch.randint(0, 2, (2,), generator=generator).tolist()
            dy = int(torch.randint(0, h, (1,), generator=generator))
            dx = int(torch.randint(0, w, (1,), generator=generator))
        else:
            flips, dy, dx = [1, 0], h // 4, w // 4
        ref = gt
        if flips[0]:
            ref = ref.flip(-1)
        if flips[1]:
            ref = ref.flip(-2)
        return torch.roll(ref, shifts=(dy, dx), dims=(-2, -1)).contiguous()


def write_inpainting_dataset(folder: str | Path, images: str = "builtin", names: list[str] | None = None,
                             exclude: list[str] | None = None, image_size=256, masks: str = "mat_256_small",
                             mask_seeds=range(5)) -> dict:
    """Step 3 for inpainting: ``folder/{gt,lq,mask}/<image>_m<seed>.png`` with fixed masks
    (255 = known) and ``folder/masks.json`` (seed, hole ratio, bucket per sample). Returns the index."""
    import json

    from utils.image_io import write_image

    ds = InpaintingDataset(images, names, exclude, image_size, masks, None, list(mask_seeds), phase="test")
    folder = Path(folder)
    index = {}
    for k in range(len(ds)):
        s = ds[k]
        name = f"{s['key']}.png"
        write_image(folder / "gt" / name, s["gt"])
        write_image(folder / "lq" / name, s["lq"])
        write_image(folder / "mask" / name, s["mask"].expand(3, -1, -1))
        r = mask_lib.hole_ratio(s["mask"][0])
        index[name] = {"image": ds.keys_[k // ds.per_image()], "mask_kind": masks,
                       "mask_seed": ds.mask_seeds[k % ds.per_image()], "hole_ratio": r,
                       "bucket": mask_lib.hole_bucket(r)}
    (folder / "masks.json").write_text(json.dumps(index, indent=1))
    return index
