"""Layered RGB-D rendering: depth-dependent, spatially varying blur with occlusion.

The scene is a stack of fronto-parallel layers, each with a colour image ``x_l`` and a coverage
(alpha) mask ``alpha_l`` at object distance ``z_l``. Each layer is blurred by the PSF field of its
depth (psf/depth.py: the stored plane, or two planes mixed linearly in 1/distance, which by
linearity is the same mix of the two planes' renders), premultiplied by its alpha, and the
blurred layers are composited back to front with the "over" operator (Porter & Duff, "Compositing
digital images", SIGGRAPH 1984):

    c_l = H_l (alpha_l x_l),   a_l = H_l alpha_l,   out <- c_l + (1 - a_l) out   (far to near)

i.e. ``out = Σ_l c_l Π_{j nearer than l} (1 - a_j)``: the layered image-formation model of
Hasinoff & Kutulakos, "A layer-based restoration framework for variable-aperture photography"
(ICCV 2007), also used for occlusion-aware defocus by Ikoma et al. (ICCP 2021). A nearer layer
hides what lies behind it by its own blurred coverage only, so a sharp foreground stays sharp:
the background's blur does not leak over it beyond the foreground PSF's own support. Layers at
one depth cannot occlude each other; they are merged (colours and alphas summed) before
compositing, so any partition of an image into layers at a single depth renders exactly as that
plane. The model does not know the background radiance hidden behind an occluder: near the edge
of a blurred foreground the background is darker than a real capture would show (the hidden part
is black), a known limit of layered compositing.

``render_rgbd(image, depth_m, field)`` cuts a depth map into layers: every pixel goes to the
nearest layer depth in 1/distance (by default the stored planes of the field; ``layer_depths_m``
sets others, each rendered with its interpolated PSF).
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch

from psf.field import PSFField


def _as_depth_field(psf):
    from psf.depth import DepthPSFField, load_depth_psf_field

    if isinstance(psf, DepthPSFField):
        return psf
    if isinstance(psf, PSFField):
        return DepthPSFField.from_field(psf)
    if isinstance(psf, (str, os.PathLike)):
        return load_depth_psf_field(psf)
    raise TypeError(f"psf must be a DepthPSFField, PSFField or a PSF file path, got {type(psf).__name__}")


class LayeredRenderer:
    """A depth PSF field prepared for one image size; ``SVRenderer`` per stored plane, built on first use.

    Args:
        psf: ``DepthPSFField``, ``PSFField`` (depth-independent) or a PSF file path.
        image_size: (H, W) of the images.
        boundary, method, origin, device, dtype: as ``utils.sv_renderer.SVRenderer``.
    """

    def __init__(self, psf, image_size: tuple[int, int], boundary: str = "reflect", method: str = "auto",
                 origin=(0, 0), device=None, dtype=torch.float32):
        self.field = _as_depth_field(psf)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.boundary, self.method, self.origin = boundary, method, origin
        self.device, self.dtype = device, dtype
        self._planes: dict[int, object] = {}

    def plane_renderer(self, index: int):
        from utils.sv_renderer import SVRenderer

        if index not in self._planes:
            self._planes[index] = SVRenderer(self.field.plane(index), self.image_size, self.boundary, self.method,
                                             self.origin, device=self.device, dtype=self.dtype)
        return self._planes[index]

    def blur_at_depth(self, x: torch.Tensor, depth_m: float) -> torch.Tensor:
        """``x`` [B, C, H, W] blurred by the field at ``depth_m`` (1/distance interpolation of the planes)."""
        pairs = self.field.depth_weights(depth_m)
        if len(pairs) == 1:
            return self.plane_renderer(pairs[0][0])(x)
        (i, wi), (j, wj) = pairs
        return wi * self.plane_renderer(i)(x) + wj * self.plane_renderer(j)(x)

    def render_layers(self, colors: torch.Tensor, alphas: torch.Tensor, depths_m: Sequence[float]) -> torch.Tensor:
        """Composite layers back to front.

        colors: [B, L, C, H, W] per-layer colours, or [B, C, H, W] one image shared by all layers;
        alphas: [B, L, 1, H, W] coverage in [0, 1]; depths_m: L object distances (any order; equal
        depths are merged). Returns [B, C, H, W].
        """
        depths = [float(d) for d in depths_m]
        if alphas.ndim != 5 or alphas.shape[2] != 1 or alphas.shape[1] != len(depths):
            raise ValueError(f"alphas must be [B, L={len(depths)}, 1, H, W], got {tuple(alphas.shape)}")
        if any(not d > 0 for d in depths):
            raise ValueError(f"layer depths must be positive distances in metres, got {depths}")
        if colors.ndim == 4:
            colors = colors[:, None]
        b, _, c, h, w = colors.shape
        out = None
        for depth in sorted(set(depths), reverse=True):  # far to near
            members = [i for i, d in enumerate(depths) if d == depth]
            alpha = alphas[:, members].sum(dim=1)  # [B, 1, H, W]
            premult = (alphas[:, members] * colors[:, members if colors.shape[1] > 1 else [0] * len(members)]).sum(1)
            blurred = self.blur_at_depth(torch.cat([premult, alpha.expand(b, c, h, w)]), depth)
            color_l, cover_l = blurred[:b], blurred[b:]
            out = color_l if out is None else color_l + (1.0 - cover_l) * out
        return out

    def render_rgbd(self, image: torch.Tensor, depth_m: torch.Tensor,
                    layer_depths_m: Sequence[float] | None = None) -> tuple[torch.Tensor, np.ndarray]:
        """Blur ``image`` [B, C, H, W] by its depth map ``depth_m`` [B, 1, H, W] (metres).

        Returns the render and the layer depths used. Pixels go to the nearest layer in 1/distance.
        """
        layers = np.asarray(self.field.depths_m if layer_depths_m is None else layer_depths_m, dtype=np.float64)
        alphas, used = depth_to_layers(depth_m, layers)
        return self.render_layers(image, alphas.to(image.dtype), used), used


def depth_to_layers(depth_m: torch.Tensor, layer_depths_m) -> tuple[torch.Tensor, np.ndarray]:
    """One-hot layer masks [B, L', 1, H, W] of a depth map [B, 1, H, W]: each pixel to the nearest
    layer depth in 1/distance; only layers some pixel uses are returned (with their depths)."""
    layers = np.asarray(layer_depths_m, dtype=np.float64)
    if layers.ndim != 1 or len(layers) == 0:
        raise ValueError("need at least one layer depth")
    if depth_m.ndim != 4 or depth_m.shape[1] != 1:
        raise ValueError(f"depth map must be [B, 1, H, W], got {tuple(depth_m.shape)}")
    if not bool((depth_m > 0).all()):
        raise ValueError("depth map must hold positive distances (metres)")
    inv_layers = torch.as_tensor(1.0 / layers, dtype=torch.float64, device=depth_m.device)
    inv = 1.0 / depth_m.double()
    nearest = (inv[..., None] - inv_layers).abs().argmin(dim=-1)  # [B, 1, H, W]
    used = sorted(int(i) for i in torch.unique(nearest))
    masks = torch.stack([(nearest == i) for i in used], dim=1).to(depth_m.dtype)  # [B, L', 1, H, W]
    return masks, layers[used]


def render_rgbd(image: torch.Tensor, depth_m: torch.Tensor, psf, layer_depths_m=None, boundary: str = "reflect",
                method: str = "auto") -> torch.Tensor:
    """One-shot ``LayeredRenderer(psf, image size).render_rgbd(image, depth_m)[0]``."""
    renderer = LayeredRenderer(psf, image.shape[-2:], boundary, method, device=image.device,
                               dtype=image.dtype if image.dtype in (torch.float32, torch.float64) else torch.float32)
    return renderer.render_rgbd(image, depth_m, layer_depths_m)[0]
