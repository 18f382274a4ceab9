"""Optical flow helpers: backward warping, flow composition, end-point error, and the
non-learned estimators (OpenCV DIS and Farnebäck).

Conventions (the same as BasicSR/IART, see docs/video.md):

* A flow is in pixels at the resolution of the tensor it sits with; channel 0 = x (+right),
  channel 1 = y (+down). ``flow_warp`` takes it channel-last ``N×H×W×2`` (as upstream);
  everything else here is channel-first ``N×2×H×W``.
* Warping is *backward*: ``flow_warp(src, f)(p) = src(p + f(p))``. The flow *from* a reference
  frame *to* a supporting frame (what ``SpyNet(ref, supp)``, ``dis_flow(ref, supp)`` return)
  aligns the supporting frame onto the reference: ``flow_warp(supp, f) ≈ ref``.
* Pixel centres are at integer coordinates ``0 … W-1`` (``align_corners=True``).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from utils.errors import ConfigError


def flow_warp(x: torch.Tensor, flow: torch.Tensor, interp_mode: str = "bilinear", padding_mode: str = "zeros",
              align_corners: bool = True) -> torch.Tensor:
    """Backward-warp ``x`` (N×C×H×W) with ``flow`` (N×H×W×2, (x, y) pixels): ``out(p) = x(p + flow(p))``.

    Keyword names and defaults as BasicSR's ``flow_warp``. The sampling grid is built in float32
    whatever the input dtype (under fp16 autocast a half-precision grid would quantise the
    sub-pixel offsets), and the result has ``x``'s dtype. ``padding_mode``: ``zeros`` (samples
    outside the image read 0, taps outside contribute 0), ``border`` or ``reflection``.
    """
    if x.shape[-2:] != flow.shape[1:3]:
        raise ValueError(f"flow_warp: image size {tuple(x.shape[-2:])} != flow size {tuple(flow.shape[1:3])}")
    n, _, h, w = x.shape
    flow = flow.float()
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device, dtype=torch.float32),
                            torch.arange(w, device=x.device, dtype=torch.float32), indexing="ij")
    vx = gx + flow[..., 0]
    vy = gy + flow[..., 1]
    grid = torch.stack((2.0 * vx / max(w - 1, 1) - 1.0, 2.0 * vy / max(h - 1, 1) - 1.0), dim=3)
    with torch.autocast(device_type=x.device.type, enabled=False):
        out = F.grid_sample(x.float(), grid, mode=interp_mode, padding_mode=padding_mode, align_corners=align_corners)
    return out.to(x.dtype)


def compose_flows(flow_1: torch.Tensor, flow_2: torch.Tensor) -> torch.Tensor:
    """Second-order flow (N×2×H×W each): ``flow_1`` from frame a to b, ``flow_2`` from b to c →
    the flow from a to c, ``flow_1 + warp(flow_2, flow_1)`` (zeros padding, as BasicVSR++/IART)."""
    return flow_1 + flow_warp(flow_2, flow_1.permute(0, 2, 3, 1))


def epe(flow: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Mean end-point error ``|flow - target|₂`` over pixels (N×2×H×W; ``mask`` N×H×W or H×W bool)."""
    err = (flow.double() - target.double()).square().sum(dim=-3).sqrt()
    if mask is not None:
        err = err[mask.expand_as(err)]
    return float(err.mean())


def _gray_u8(image) -> np.ndarray:
    """C×H×W (or H×W) in [0, 1] (tensor or array) → H×W uint8 luma (BT.601 weights)."""
    a = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    a = a.astype(np.float64)
    if a.ndim == 3:
        a = (0.299 * a[0] + 0.587 * a[1] + 0.114 * a[2]) if a.shape[0] == 3 else a[0]
    return np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)


DIS_PRESETS = {"ultrafast": 0, "fast": 1, "medium": 2}


def dis_flow(ref, supp, preset: str = "medium") -> torch.Tensor:
    """OpenCV DIS optical flow from ``ref`` to ``supp`` (C×H×W or H×W in [0, 1]) → 2×H×W float32
    ((x, y) pixels): ``flow_warp(supp, flow) ≈ ref``."""
    import cv2

    if preset not in DIS_PRESETS:
        raise ConfigError(f"dis_flow preset must be one of {', '.join(DIS_PRESETS)}, got {preset!r}")
    dis = cv2.DISOpticalFlow_create(DIS_PRESETS[preset])
    flow = dis.calc(_gray_u8(ref), _gray_u8(supp), None)
    return torch.from_numpy(np.ascontiguousarray(flow.transpose(2, 0, 1))).float()


def farneback_flow(ref, supp, pyr_scale: float = 0.5, levels: int = 3, winsize: int = 15, iterations: int = 3,
                   poly_n: int = 5, poly_sigma: float = 1.2) -> torch.Tensor:
    """OpenCV Farnebäck flow from ``ref`` to ``supp`` (same convention as ``dis_flow``)."""
    import cv2

    flow = cv2.calcOpticalFlowFarneback(_gray_u8(ref), _gray_u8(supp), None, pyr_scale, levels, winsize,
                                        iterations, poly_n, poly_sigma, 0)
    return torch.from_numpy(np.ascontiguousarray(flow.transpose(2, 0, 1))).float()


def batched_flow(estimator, ref: torch.Tensor, supp: torch.Tensor, **kwargs) -> torch.Tensor:
    """Apply a per-pair numpy estimator (``dis_flow``/``farneback_flow``) to N×C×H×W batches."""
    flows = [estimator(r, s, **kwargs) for r, s in zip(ref, supp)]
    return torch.stack(flows).to(ref.device, ref.dtype)
