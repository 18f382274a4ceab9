"""``ShiftedClipDataset``: T-frame clips of a still image moved by known per-frame shifts (toy video data)."""
from __future__ import annotations

import math

import numpy as np
import torch

from dataset.base import Geometry, PairedImageDataset, as_size
from dataset.sources import fit_to_size, list_sources, load_source
from dataset.synthetic_dataset import check_noise_options
from dataset.transforms import check_downscale
from dataset.transforms import downscale as downscale_image
from utils.errors import ConfigError, DataError
from utils.image_io import quantize

_MOTIONS = ("subpixel", "integer")
_TARGETS = ("clip", "center")


def shift_frame(image: torch.Tensor, dy: float, dx: float, top: int, left: int, height: int, width: int) -> torch.Tensor:
    """``out[:, y, x] = image(top + y + dy, left + x + dx)``, bilinear between the 4 neighbours
    (exact for integer shifts). The window plus one pixel must lie inside ``image``."""
    iy, ix = math.floor(dy), math.floor(dx)
    fy, fx = dy - iy, dx - ix
    y0, x0 = top + iy, left + ix

    def window(oy: int, ox: int) -> torch.Tensor:
        return image[:, y0 + oy:y0 + oy + height, x0 + ox:x0 + ox + width]

    out = window(0, 0) * ((1 - fy) * (1 - fx))
    if fx:
        out = out + window(0, 1) * ((1 - fy) * fx)
    if fy:
        out = out + window(1, 0) * (fy * (1 - fx))
    if fx and fy:
        out = out + window(1, 1) * (fy * fx)
    return out


class ShiftedClipDataset(PairedImageDataset):
    """Clips of ``frames`` frames cut from still images (``skimage.data`` built-ins or a folder),
    each frame the image moved by a known shift: a camera panning over a still scene.

    YAML keys (constructor keywords)::

        type: ShiftedClipDataset
        images: builtin            # "builtin" (skimage.data) or a folder of images
        names: null                # only these images (built-in names / relative paths w/o extension)
        exclude: [astronaut]       # leave these out (held-out images)
        image_size: null           # [H, W] each image is centre-cropped + resized to (null: native size)
        frames: 3                  # T, frames per clip
        motion: subpixel           # subpixel (bilinear) | integer (whole-pixel shifts, exact copies)
        max_shift: 2.0             # per-frame step bound in gt pixels, drawn per axis in [-max, max]
        target: clip               # clip: gt is the T-frame clip | center: gt is the centre frame (odd T)
        scale: 1                   # lq = frames downscaled by scale (video SR)
        downscale: bicubic         # bicubic (antialiased, PIL/MATLAB kernel) | area (block mean)
        noise: {kind: none}        # utils.noise options, added to lq (sRGB), e.g. {kind: gaussian, sigma: 0.01}
        quantize_bits: 8           # gt and lq on 8-bit levels like stored PNGs (null: keep float)
        samples_per_image: 1       # clips per image per epoch
        phase: train               # train (random shifts/crop/flips) | val | test (fixed); set by the trainer
        crop_size: 64              # in lq pixels
        use_flip: true
        use_rot: true
        time_reverse: true         # train only: play the clip backwards half of the time
        seed: 0
        skip_bad_samples: false

    A sample holds ``lq`` (T×C×h×w), ``gt`` (T×C×H×W, or C×H×W for ``target: center``),
    ``shifts`` (float32 T×2, (dy, dx) in gt pixels, in the sample's own axes: frame ``t`` at
    pixel ``p`` shows the centre frame's content at ``p + shifts[t]``; the centre frame
    ``T // 2`` has shift 0) and ``key`` = the clip name (the image name, ``name_003`` with
    several clips per image). Frames are numbered by position, so an evaluation writes
    ``CLIP/00000000.png`` ... for frame 0...

    Per sample (from the (seed, epoch, index) generator, in this order): the T-1 steps of a
    random walk out from the centre frame, each uniform in [-max_shift, max_shift] per axis
    (rounded to integers for ``motion: integer``); the crop and flips (and time reversal);
    the noise. Frames are rendered from the whole image (minus a margin the motion can never
    leave, so no frame needs padding), downscaled as a whole, then cropped.
    """

    layouts = {"shifts": "displacement"}

    def __init__(
        self,
        images: str = "builtin",
        names: list[str] | None = None,
        exclude: list[str] | None = None,
        image_size: int | list[int] | None = None,
        frames: int = 3,
        motion: str = "subpixel",
        max_shift: float = 2.0,
        target: str = "clip",
        scale: int = 1,
        downscale: str = "bicubic",
        noise: dict | None = None,
        quantize_bits: int | None = 8,
        samples_per_image: int = 1,
        phase: str = "train",
        crop_size: int | list[int] | None = None,
        use_flip: bool = True,
        use_rot: bool = True,
        time_reverse: bool = True,
        seed: int = 0,
        skip_bad_samples: bool = False,
    ):
        super().__init__(phase=phase, crop_size=crop_size, use_flip=use_flip, use_rot=use_rot, seed=seed,
                         skip_bad_samples=skip_bad_samples, scale=scale, time_reverse=time_reverse)
        if not isinstance(frames, int) or isinstance(frames, bool) or frames < 1:
            raise ConfigError(f"frames must be a positive integer, got {frames!r}")
        if motion not in _MOTIONS:
            raise ConfigError(f"motion must be one of {', '.join(_MOTIONS)}, got {motion!r}")
        if target not in _TARGETS:
            raise ConfigError(f"target must be one of {', '.join(_TARGETS)}, got {target!r}")
        if target == "center" and frames % 2 == 0:
            raise ConfigError(f"target: center needs an odd number of frames (a centre frame), got frames: {frames}")
        if not isinstance(max_shift, (int, float)) or isinstance(max_shift, bool) or max_shift < 0:
            raise ConfigError(f"max_shift must be a number >= 0 (gt pixels per frame), got {max_shift!r}")
        if quantize_bits not in (None, 8, 16):
            raise ConfigError(f"quantize_bits must be 8, 16 or null, got {quantize_bits!r}")
        if not isinstance(samples_per_image, int) or samples_per_image < 1:
            raise ConfigError(f"samples_per_image must be a positive integer, got {samples_per_image!r}")
        self.frames, self.motion, self.target = frames, motion, target
        self.max_shift = float(math.floor(max_shift) if motion == "integer" else max_shift)
        self.downscale = check_downscale(downscale)
        self.noise = check_noise_options({"kind": "none"} if noise is None else noise)
        self.quantize_bits = quantize_bits
        self.samples_per_image = samples_per_image
        self.centre = frames // 2
        # The farthest frame is max(centre, T-1-centre) steps away; +1 row/column for bilinear.
        self.margin = math.ceil(self.max_shift * max(self.centre, frames - 1 - self.centre))
        size = as_size(image_size, "image_size")

        self.keys_: list[str] = []
        self.images: list[torch.Tensor] = []
        for name, path in list_sources(images, names, exclude):
            try:
                img = load_source(name, path)
            except DataError as exc:
                if not skip_bad_samples:
                    raise
                self.skipped[name] = str(exc)
                continue
            if size is not None:
                img = fit_to_size(img, size)
            if quantize_bits:
                img = quantize(img, quantize_bits)
            h, w = self.frame_size(img.shape[:2])
            if h < self.scale or w < self.scale:
                raise DataError(f"image '{name}' ({img.shape[1]}x{img.shape[0]}) is too small for max_shift "
                                f"{max_shift} over {frames} frames")
            self.keys_.append(name)
            self.images.append(torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))))
        if not self.keys_:
            raise DataError(f"no readable source image ({len(self.skipped)} skipped)")

    def frame_size(self, image_hw) -> tuple[int, int]:
        """Rendered frame size (gt pixels): the image minus the margin, a multiple of ``scale``."""
        h, w = (int(v) - 2 * self.margin - 1 for v in image_hw)
        return h - h % self.scale, w - w % self.scale

    def __len__(self) -> int:
        return len(self.keys_) * self.samples_per_image

    def sample_key(self, index: int) -> str:
        name = self.keys_[index // self.samples_per_image]
        return name if self.samples_per_image == 1 else f"{name}_{index % self.samples_per_image:03d}"

    def draw_shifts(self, generator: torch.Generator) -> torch.Tensor:
        """T×2 (dy, dx): a random walk out from the centre frame (shift 0)."""
        steps = (torch.rand(self.frames - 1, 2, generator=generator) * 2 - 1) * self.max_shift
        if self.motion == "integer":
            steps = steps.round()
        shifts = torch.zeros(self.frames, 2)
        k = 0
        for t in list(range(self.centre + 1, self.frames)) + list(range(self.centre - 1, -1, -1)):
            shifts[t] = shifts[t - 1 if t > self.centre else t + 1] + steps[k]
            k += 1
        return shifts

    def load_sample(self, index: int, generator: torch.Generator) -> dict:
        image = self.images[index // self.samples_per_image]
        shifts = self.draw_shifts(generator)
        h, w = self.frame_size(image.shape[-2:])
        m = self.margin
        clip = torch.stack([shift_frame(image, float(dy), float(dx), m, m, h, w) for dy, dx in shifts.tolist()])
        if self.quantize_bits:
            clip = quantize(clip, self.quantize_bits)
        gt = clip if self.target == "clip" else clip[self.centre]
        lq = downscale_image(clip, self.scale, self.downscale)
        return {"gt": gt.contiguous(), "lq": lq, "shifts": shifts, "key": self.sample_key(index)}

    def finish_sample(self, sample: dict, index: int, geometry: Geometry, generator: torch.Generator) -> None:
        """Noise on the (cropped, flipped) lq clip, then quantised like stored frames."""
        from utils.noise import sample_noise_model

        lq = sample_noise_model(**self.noise, generator=generator)(sample["lq"], generator)
        sample["lq"] = (quantize(lq, self.quantize_bits) if self.quantize_bits else lq).contiguous()
