"""``SyntheticVideoDataset``: video SR clips with **exactly known dense motion**, so alignment and
flow can be checked against ground truth (and SpyNet supervised on it).

Each clip (HR frames, then BI or BD ×``scale`` to LR):

* **background**: a source image (``skimage.data`` built-ins or a folder) seen through a
  sub-pixel *affine* camera per frame: ``frame_t(p) = I(A_t (p − c) + c_I + b_t)`` with
  ``A_t = s_t·R(θ_t)`` (zoom and rotation drifting linearly over the clip) and ``b_t`` a random
  walk of per-frame steps ≤ ``max_shift`` HR pixels (bilinear sampling, border clamp);
* **sprites**: ``sprites`` discs of radius ``sprite_radius`` textured from the upside-down image,
  each moving at its own constant velocity (≤ ``max_sprite_speed``), composited on top.

Flows are evaluated analytically (never estimated): for a pixel p of frame i the flow to frame j
is ``q − p`` with q where the same scene point is in frame j: ``c_j − c_i`` inside the topmost
sprite covering p, the affine map ``A_j⁻¹(A_i (p − c) + b_i − b_j) + c`` on the background. Where
a sprite hides in frame j what p shows in frame i, the flow is the true motion of p's point
(occlusion: no frame content matches there). The LR flow at LR pixel j is the HR flow at the HR
point ``scale·j + (scale−1)/2`` (where BI and BD put LR pixel j, utils/degradations_video.py)
divided by ``scale``.

A sample holds ``lq`` (T×C×h×w), ``gt`` (T×C×H×W), ``flows_backward`` and ``flows_forward``
((T−1)×2×h×w, LR pixels, channel 0 = x, 1 = y; ``flows_backward[i]`` from frame i to i+1,
``flows_forward[i]`` from frame i+1 to i: the order BasicVSR/IART's ``compute_flow`` returns),
and ``key``. Training crops, flips, transposes and time reversal move frames and flows
consistently (the flow vectors are negated/swapped with the flips/transpose; reversal swaps the
two flow tables). YAML keys are the constructor keywords.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from dataset.base import Geometry, PairedImageDataset, as_size
from dataset.sources import fit_to_size, list_sources, load_source
from utils.degradations_video import DEGRADATIONS, degrade
from utils.errors import ConfigError, DataError
from utils.image_io import quantize


def _sample(image: torch.Tensor, sy: torch.Tensor, sx: torch.Tensor) -> torch.Tensor:
    """Bilinear ``image`` (C×H×W) at float coordinates (…), border clamp → C×…"""
    h, w = image.shape[-2:]
    grid = torch.stack((2 * sx / (w - 1) - 1, 2 * sy / (h - 1) - 1), dim=-1).reshape(1, -1, 1, 2)
    out = F.grid_sample(image[None].float(), grid.float(), mode="bilinear", padding_mode="border", align_corners=True)
    return out.reshape(image.shape[0], *sy.shape).float()


class ClipMotion:
    """The motion of one clip (all in HR pixels, frame coordinates with centre ``c``)."""

    def __init__(self, frames: int, size: tuple[int, int], image_hw: tuple[int, int], generator: torch.Generator,
                 max_shift: float, max_rotation: float, max_zoom: float, sprites: int, sprite_radius: float,
                 max_sprite_speed: float):
        self.frames = frames
        h, w = size
        self.c = ((h - 1) / 2, (w - 1) / 2)
        self.c_img = ((image_hw[0] - 1) / 2, (image_hw[1] - 1) / 2)

        def u(*shape):
            return torch.rand(*shape, generator=generator, dtype=torch.float64) * 2 - 1

        steps = u(frames - 1, 2) * max_shift
        self.b = torch.cat([torch.zeros(1, 2, dtype=torch.float64), steps.cumsum(0)])  # (dy, dx)
        self.b = self.b - self.b[frames // 2]
        dtheta = float(u(1)) * math.radians(max_rotation)
        dzoom = float(u(1)) * max_zoom
        t = torch.arange(frames, dtype=torch.float64) - frames // 2
        self.theta = t * dtheta
        self.zoom = 1 + t * dzoom
        self.sprite_c0 = torch.stack([torch.rand(sprites, generator=generator, dtype=torch.float64) * (h - 1),
                                      torch.rand(sprites, generator=generator, dtype=torch.float64) * (w - 1)], -1)
        self.sprite_v = u(sprites, 2) * max_sprite_speed
        self.sprite_tex = torch.stack([torch.rand(sprites, generator=generator, dtype=torch.float64) * (image_hw[0] - 1),
                                       torch.rand(sprites, generator=generator, dtype=torch.float64) * (image_hw[1] - 1)], -1)
        self.sprite_r = sprite_radius

    def matrix(self, t: int) -> torch.Tensor:
        c, s = math.cos(self.theta[t]), math.sin(self.theta[t])
        return self.zoom[t] * torch.tensor([[c, -s], [s, c]], dtype=torch.float64)  # acts on (y, x)

    def background_source(self, t: int, py: torch.Tensor, px: torch.Tensor):
        a = self.matrix(t)
        dy, dx = py - self.c[0], px - self.c[1]
        sy = a[0, 0] * dy + a[0, 1] * dx + self.c_img[0] + self.b[t, 0]
        sx = a[1, 0] * dy + a[1, 1] * dx + self.c_img[1] + self.b[t, 1]
        return sy, sx

    def sprite_centre(self, s: int, t: int) -> torch.Tensor:
        return self.sprite_c0[s] + (t - self.frames // 2) * self.sprite_v[s]

    def topmost_sprite(self, t: int, py: torch.Tensor, px: torch.Tensor) -> torch.Tensor:
        """Index of the topmost sprite covering each point in frame t (-1: background)."""
        idx = torch.full(py.shape, -1, dtype=torch.long)
        for s in range(len(self.sprite_c0)):
            c = self.sprite_centre(s, t)
            inside = (py - c[0]) ** 2 + (px - c[1]) ** 2 <= self.sprite_r ** 2
            idx[inside] = s
        return idx

    def render(self, image: torch.Tensor, sprite_image: torch.Tensor, t: int, size) -> torch.Tensor:
        py, px = torch.meshgrid(torch.arange(size[0], dtype=torch.float64), torch.arange(size[1], dtype=torch.float64),
                                indexing="ij")
        frame = _sample(image, *self.background_source(t, py, px))
        top = self.topmost_sprite(t, py, px)
        for s in range(len(self.sprite_c0)):
            sel = top == s
            if sel.any():
                c = self.sprite_centre(s, t)
                tex = _sample(sprite_image, py[sel] - c[0] + self.sprite_tex[s, 0], px[sel] - c[1] + self.sprite_tex[s, 1])
                frame[:, sel] = tex
        return frame

    def flow(self, i: int, j: int, py: torch.Tensor, px: torch.Tensor) -> torch.Tensor:
        """HR flow (x, y) from frame i to frame j at points (py, px) of frame i → 2×…"""
        sy, sx = self.background_source(i, py, px)
        inv = torch.linalg.inv(self.matrix(j))
        ry, rx = sy - self.c_img[0] - self.b[j, 0], sx - self.c_img[1] - self.b[j, 1]
        qy = inv[0, 0] * ry + inv[0, 1] * rx + self.c[0]
        qx = inv[1, 0] * ry + inv[1, 1] * rx + self.c[1]
        top = self.topmost_sprite(i, py, px)
        for s in range(len(self.sprite_c0)):
            sel = top == s
            d = self.sprite_centre(s, j) - self.sprite_centre(s, i)
            qy = torch.where(sel, py + d[0], qy)
            qx = torch.where(sel, px + d[1], qx)
        return torch.stack([qx - px, qy - py])


class SyntheticVideoDataset(PairedImageDataset):
    """YAML keys (constructor keywords)::

        type: SyntheticVideoDataset
        images: builtin          # "builtin" (skimage.data) or a folder
        names: null              # only these images
        exclude: []              # leave these out (held-out images)
        image_size: [160, 160]   # source images are centre-cropped + resized to this (HR pixels)
        frame_size: [128, 128]   # HR frame size (a multiple of scale; smaller than image_size)
        frames: 7
        scale: 4
        degradation: BD          # BD | BI (utils/degradations_video.py)
        max_shift: 2.0           # camera translation step per frame, HR pixels per axis
        max_rotation: 0.5        # degrees per frame
        max_zoom: 0.005          # relative zoom per frame
        sprites: 2
        sprite_radius: 12.0      # HR pixels
        max_sprite_speed: 3.0    # HR pixels per frame per axis
        quantize_bits: 8         # gt and lq on 8-bit levels (null: float)
        samples_per_image: 1
        phase: train             # set by the trainer
        crop_size: 32            # LR pixels (null: whole frames)
        use_flip: true
        use_rot: true
        time_reverse: true
        seed: 0
    """

    layouts = {"flows_backward": "map", "flows_forward": "map"}

    def __init__(self, images: str = "builtin", names: list[str] | None = None, exclude: list[str] | None = None,
                 image_size=(160, 160), frame_size=(128, 128), frames: int = 7, scale: int = 4,
                 degradation: str = "BD", max_shift: float = 2.0, max_rotation: float = 0.5, max_zoom: float = 0.005,
                 sprites: int = 2, sprite_radius: float = 12.0, max_sprite_speed: float = 3.0,
                 quantize_bits: int | None = 8, samples_per_image: int = 1, phase: str = "train", crop_size=None,
                 use_flip: bool = True, use_rot: bool = True, time_reverse: bool = True, seed: int = 0,
                 skip_bad_samples: bool = False):
        super().__init__(phase=phase, crop_size=crop_size, use_flip=use_flip, use_rot=use_rot, seed=seed,
                         skip_bad_samples=skip_bad_samples, scale=scale, time_reverse=time_reverse)
        if not isinstance(frames, int) or frames < 1:
            raise ConfigError(f"frames must be a positive integer, got {frames!r}")
        if degradation not in DEGRADATIONS:
            raise ConfigError(f"degradation must be one of {', '.join(DEGRADATIONS)}, got {degradation!r}")
        if quantize_bits not in (None, 8, 16):
            raise ConfigError(f"quantize_bits must be 8, 16 or null, got {quantize_bits!r}")
        self.image_size = as_size(image_size, "image_size")
        self.frame_size = as_size(frame_size, "frame_size")
        if self.frame_size[0] % self.scale or self.frame_size[1] % self.scale:
            raise ConfigError(f"frame_size {self.frame_size} must be a multiple of scale {self.scale}")
        if self.frame_size[0] > self.image_size[0] or self.frame_size[1] > self.image_size[1]:
            raise ConfigError(f"frame_size {self.frame_size} must fit in image_size {self.image_size}")
        self.frames, self.degradation, self.quantize_bits = frames, degradation, quantize_bits
        self.motion_options = dict(max_shift=float(max_shift), max_rotation=float(max_rotation), max_zoom=float(max_zoom),
                                   sprites=int(sprites), sprite_radius=float(sprite_radius),
                                   max_sprite_speed=float(max_sprite_speed))
        self.samples_per_image = int(samples_per_image)
        self.keys_, self.images = [], []
        for name, path in list_sources(images, names, exclude):
            img = fit_to_size(load_source(name, path), self.image_size)
            if quantize_bits:
                img = quantize(img, quantize_bits)
            self.keys_.append(name)
            self.images.append(torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))))
        if not self.keys_:
            raise DataError("SyntheticVideoDataset: no source image")

    def __len__(self) -> int:
        return len(self.keys_) * self.samples_per_image

    def sample_key(self, index: int) -> str:
        name = self.keys_[index // self.samples_per_image]
        return name if self.samples_per_image == 1 else f"{name}_{index % self.samples_per_image:03d}"

    def motion(self, index: int, generator: torch.Generator) -> ClipMotion:
        image = self.images[index // self.samples_per_image]
        return ClipMotion(self.frames, self.frame_size, tuple(image.shape[-2:]), generator, **self.motion_options)

    def lr_flows(self, motion: ClipMotion) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.scale
        h, w = self.frame_size[0] // s, self.frame_size[1] // s
        py, px = torch.meshgrid(torch.arange(h, dtype=torch.float64) * s + (s - 1) / 2,
                                torch.arange(w, dtype=torch.float64) * s + (s - 1) / 2, indexing="ij")
        fb = [motion.flow(i, i + 1, py, px) / s for i in range(self.frames - 1)]
        ff = [motion.flow(i + 1, i, py, px) / s for i in range(self.frames - 1)]
        empty = torch.zeros(0, 2, h, w)
        return (torch.stack(fb).float() if fb else empty), (torch.stack(ff).float() if ff else empty)

    def load_sample(self, index: int, generator: torch.Generator) -> dict:
        image = self.images[index // self.samples_per_image]
        motion = self.motion(index, generator)
        sprite_image = image.flip(-2)
        gt = torch.stack([motion.render(image, sprite_image, t, self.frame_size) for t in range(self.frames)])
        if self.quantize_bits:
            gt = quantize(gt, self.quantize_bits)
        lq = degrade(gt, self.degradation, self.scale)
        if self.quantize_bits:
            lq = quantize(lq, self.quantize_bits)
        fb, ff = self.lr_flows(motion)
        return {"gt": gt.contiguous(), "lq": lq.contiguous(), "flows_backward": fb, "flows_forward": ff,
                "key": self.sample_key(index)}

    def finish_sample(self, sample: dict, index: int, geometry: Geometry, generator: torch.Generator) -> None:
        """The transform moved the flow maps as images; move their vectors (and time) too."""
        for name in ("flows_backward", "flows_forward"):
            sample[name] = transform_flow_vectors(sample[name], geometry)
        if geometry.reverse_time:
            fb, ff = sample["flows_backward"], sample["flows_forward"]
            sample["flows_backward"], sample["flows_forward"] = ff.flip(0).contiguous(), fb.flip(0).contiguous()


def transform_flow_vectors(flow: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """(x, y) flow vectors (…×2×H×W) of a map already flipped/transposed as an image by
    ``geometry``: negate x with the horizontal flip, y with the vertical one, swap with the transpose."""
    flow = flow.clone()
    if geometry.hflip:
        flow[..., 0, :, :] = -flow[..., 0, :, :]
    if geometry.vflip:
        flow[..., 1, :, :] = -flow[..., 1, :, :]
    if geometry.transpose:
        flow = flow.flip(-3)
    return flow.contiguous()
