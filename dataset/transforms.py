"""Keyed samples and the one geometric transform that moves all their keys in alignment.

A sample is a dict of tensors (plus non-tensor entries such as ``key``, passed through). A
``layouts`` mapping ``{key: layout}`` says how each tensor is cropped, flipped and transposed:

==============  ==========================  =================================================
layout          shape (per sample)          under the transform
==============  ==========================  =================================================
image           C×H×W                       cropped, flipped, transposed
clip            T×C×H×W                     the same per frame; time-reversed when drawn
mask            1×H×W                       like image
map             ...×H×W (aligned with lq)   like image (any leading dims, e.g. PSF coefficients)
kernel          ...×k×k                     flipped/transposed, not cropped (a mirrored scene
                                            is blurred by the mirrored kernel)
vector          D                           untouched (per-sample parameters)
scalar          ()                          untouched
displacement    ...×2 as (dy, dx)           vectors in the sample's own axes: dx negated by
                                            the horizontal flip, dy by the vertical one,
                                            swapped by the transpose; a T×2 per-frame table
                                            is reversed with the clip
==============  ==========================  =================================================

The table is ``utils.layouts.LAYOUTS``, shared with the networks' ``ArchIO.inputs``;
``displacement`` carries known motion (``ShiftedClipDataset``'s per-frame ``shifts``, flows).

Scale: the crop is drawn in ``lq`` pixels; a spatial key whose H×W is ``scale``× lq's is cut at
``scale``× the position and size (a 64² lq crop at (top, left) ↔ the 128² gt crop at
(2·top, 2·left) for ×2). Any other size is an error that names the sample and the key.

Draw order (from the sample's ``torch.Generator``, never a global RNG): crop top, crop left
(training only), horizontal and vertical flip (``use_flip``), transpose (``use_rot``, square
crops only), time reversal (``time_reverse``, clip samples only). For image samples at scale 1
this is exactly the order the datasets have always used, so their samples are unchanged.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import torch

from utils.errors import ConfigError, DataError
from utils.layouts import LAYOUTS, SPATIAL_LAYOUTS  # noqa: F401 (re-exported)

_MIN_DIMS = {"image": 3, "clip": 4, "mask": 3, "map": 2, "kernel": 2, "vector": 1, "scalar": 0, "displacement": 1}


def check_layouts(layouts: Mapping[str, str]) -> dict[str, str]:
    unknown = {k: v for k, v in layouts.items() if v not in LAYOUTS}
    if unknown:
        raise ConfigError(f"unknown layout(s) {unknown} (valid: {', '.join(LAYOUTS)})")
    return dict(layouts)


@dataclass(frozen=True)
class Geometry:
    """Where a sample was cut from its image (in lq pixels) and how it was flipped.

    Applied in this order: crop ``[top:top+height, left:left+width]``, then horizontal flip,
    vertical flip, transpose (swap H and W), and for clips time reversal. The same geometry is
    applied to gt, lq and every per-pixel map (gt at ``scale``× the position and size, see
    :meth:`scaled`); kernels get the matching kernel transform.
    """

    top: int
    left: int
    height: int
    width: int
    hflip: bool = False
    vflip: bool = False
    transpose: bool = False
    reverse_time: bool = False

    @property
    def is_identity_transform(self) -> bool:
        return not (self.hflip or self.vflip or self.transpose or self.reverse_time)

    def scaled(self, scale: int) -> Geometry:
        """The same cut in an image ``scale``× larger (the gt of a ×scale SR pair)."""
        if scale == 1:
            return self
        return replace(self, top=self.top * scale, left=self.left * scale,
                       height=self.height * scale, width=self.width * scale)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Crop + flip a ``[..., H, W]`` tensor (images and per-pixel maps; no time reversal)."""
        x = x[..., self.top:self.top + self.height, self.left:self.left + self.width]
        return self.apply_transform(x)

    def apply_transform(self, x: torch.Tensor) -> torch.Tensor:
        """Flip/transpose only (no crop): also the transform for kernels ``[..., k, k]``."""
        if self.hflip:
            x = x.flip(-1)
        if self.vflip:
            x = x.flip(-2)
        if self.transpose:
            x = x.transpose(-1, -2)
        return x.contiguous()

    def apply_displacement(self, d: torch.Tensor) -> torch.Tensor:
        """``[..., 2]`` (dy, dx) vectors in the source's axes -> the sample's axes (same flip order)."""
        d = d.clone()
        if self.hflip:
            d[..., 1] = -d[..., 1]
        if self.vflip:
            d[..., 0] = -d[..., 0]
        if self.transpose:
            d = d.flip(-1)
        return d.contiguous()

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


class KeyedTransform:
    """Draws one :class:`Geometry` per sample and applies it to every key in alignment.

    ``crop_size`` (h, w) is in lq pixels (None: the whole image); ``random`` False gives the
    deterministic evaluation geometry: the centre crop (or the whole image), no flips.
    """

    def __init__(self, crop_size: tuple[int, int] | None = None, scale: int = 1, use_flip: bool = False,
                 use_rot: bool = False, time_reverse: bool = False, random: bool = True, ref_key: str = "lq"):
        if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
            raise ConfigError(f"scale must be a positive integer, got {scale!r}")
        self.crop_size = None if crop_size is None else (int(crop_size[0]), int(crop_size[1]))
        self.scale = scale
        self.use_flip, self.use_rot, self.time_reverse = bool(use_flip), bool(use_rot), bool(time_reverse)
        self.random = bool(random)
        self.ref_key = ref_key

    def draw(self, image_hw, generator: torch.Generator, key: str, clip: bool = False) -> Geometry:
        """Crop box (lq pixels) + flips for one sample, drawn in a fixed order from ``generator``."""
        h, w = int(image_hw[0]), int(image_hw[1])
        if self.crop_size is None:
            ch, cw = h, w
        else:
            ch, cw = self.crop_size
            if ch > h or cw > w:
                unit = " lq" if self.scale > 1 else ""
                raise DataError(f"sample '{key}' is {w}x{h}{unit} (width x height), smaller than crop_size "
                                f"{cw}x{ch}; lower crop_size or remove the image")
        if not self.random:
            return Geometry((h - ch) // 2, (w - cw) // 2, ch, cw)
        top = int(torch.randint(0, h - ch + 1, (1,), generator=generator))
        left = int(torch.randint(0, w - cw + 1, (1,), generator=generator))
        hflip = vflip = transpose = reverse = False
        if self.use_flip:
            hflip, vflip = (bool(b) for b in torch.rand(2, generator=generator) < 0.5)
        if self.use_rot and ch == cw:  # a transpose must keep the batch shape
            transpose = bool(torch.rand(1, generator=generator) < 0.5)
        if self.time_reverse and clip:
            reverse = bool(torch.rand(1, generator=generator) < 0.5)
        return Geometry(top, left, ch, cw, hflip, vflip, transpose, reverse)

    def check(self, sample: Mapping, layouts: Mapping[str, str], key: str) -> dict[str, int]:
        """Each tensor key's scale relative to lq (1 or ``scale``); DataError naming the key otherwise."""
        if self.ref_key not in sample:
            raise DataError(f"sample '{key}' has no '{self.ref_key}' entry")
        ref = sample[self.ref_key]
        rh, rw = ref.shape[-2:]
        factors, frames = {}, {}
        for name, value in sample.items():
            if not isinstance(value, torch.Tensor):
                continue
            layout = layouts.get(name)
            if layout is None:
                raise DataError(f"sample '{key}': entry '{name}' has no declared layout "
                                f"(one of {', '.join(LAYOUTS)})")
            if layout not in LAYOUTS:
                raise DataError(f"sample '{key}': entry '{name}' has unknown layout {layout!r}")
            if value.dim() < _MIN_DIMS[layout] or (layout in ("image", "mask") and value.dim() != 3) \
                    or (layout == "clip" and value.dim() != 4) or (layout == "scalar" and value.dim() != 0) \
                    or (layout == "mask" and value.shape[0] != 1) or (layout == "displacement" and value.shape[-1] != 2):
                raise DataError(f"sample '{key}': entry '{name}' of shape {tuple(value.shape)} does not fit "
                                f"layout {layout} ({LAYOUTS[layout]})")
            if layout == "clip":
                frames[name] = value.shape[0]
            if layout not in SPATIAL_LAYOUTS:
                continue
            h, w = value.shape[-2:]
            for factor in dict.fromkeys((1, self.scale)):
                if (h, w) == (rh * factor, rw * factor):
                    factors[name] = factor
                    break
            else:
                expected = f"{rw}x{rh}" + (f" or {rw * self.scale}x{rh * self.scale} (scale {self.scale})"
                                           if self.scale > 1 else "")
                raise DataError(f"sample '{key}': {name} is {w}x{h} but {self.ref_key} is {rw}x{rh} "
                                f"(width x height); {name} must be {expected}")
        if len(set(frames.values())) > 1:
            raise DataError(f"sample '{key}': clips of different lengths {frames}")
        return factors

    def apply(self, sample: dict, layouts: Mapping[str, str], geometry: Geometry, factors: Mapping[str, int]) -> dict:
        """A new sample: every tensor moved by ``geometry`` according to its layout."""
        out = {}
        for name, value in sample.items():
            layout = layouts.get(name) if isinstance(value, torch.Tensor) else None
            if layout is None or layout in ("vector", "scalar"):
                out[name] = value
            elif layout in SPATIAL_LAYOUTS:
                value = geometry.scaled(factors[name]).apply(value)
                if layout == "clip" and geometry.reverse_time:
                    value = value.flip(0).contiguous()
                out[name] = value
            elif layout == "kernel":
                out[name] = geometry.apply_transform(value)
            else:  # displacement
                value = geometry.apply_displacement(value)
                if geometry.reverse_time and value.dim() >= 2:
                    value = value.flip(-2).contiguous()
                out[name] = value
        return out

    def __call__(self, sample: dict, layouts: Mapping[str, str], generator: torch.Generator) -> tuple[dict, Geometry]:
        """Check, draw and apply: ``(transformed sample, geometry)``."""
        key = str(sample.get("key", "?"))
        factors = self.check(sample, layouts, key)
        clip = any(layouts.get(k) == "clip" for k, v in sample.items() if isinstance(v, torch.Tensor))
        geometry = self.draw(sample[self.ref_key].shape[-2:], generator, key, clip=clip)
        return self.apply(sample, layouts, geometry, factors), geometry


DOWNSCALE_METHODS = ("bicubic", "area")


def check_downscale(method: str) -> str:
    if method not in DOWNSCALE_METHODS:
        raise ConfigError(f"downscale must be one of {', '.join(DOWNSCALE_METHODS)}, got {method!r}")
    return method


def downscale(x: torch.Tensor, scale: int, method: str = "bicubic") -> torch.Tensor:
    """``[..., C, H, W]`` -> ``[..., C, H/scale, W/scale]`` (H and W multiples of ``scale``).

    ``area``: the mean of each scale×scale block (a sensor integrating over bigger pixels).
    ``bicubic``: MATLAB's antialiased bicubic ``imresize`` (utils.imresize: Keys a = -0.5, kernel
    widened by ``scale``, symmetric borders), the "BI" degradation of SR benchmarks; clamped to
    [0, 1]. (PIL's ``BICUBIC`` resize has the same kernel but renormalises at the borders instead of
    mirroring: equal in the interior, not at the edges.)
    """
    check_downscale(method)
    if scale == 1:
        return x
    h, w = x.shape[-2:]
    if h % scale or w % scale:
        raise DataError(f"cannot downscale {w}x{h} by {scale}: width and height must be multiples of {scale}")
    lead = x.shape[:-3]
    flat = x.reshape(-1, *x.shape[-3:]).float()
    if method == "area":
        out = torch.nn.functional.avg_pool2d(flat, scale)
    else:
        from utils.imresize import imresize

        out = imresize(flat, 1 / scale).clamp(0, 1)
    return out.reshape(*lead, *out.shape[-3:]).contiguous()
