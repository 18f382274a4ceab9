"""Modulated deformable convolution (DCNv2; Zhu et al., "Deformable ConvNets v2", CVPR 2019) in
pure torch: no compiled ops, no torchvision. Bilinear sampling through ``F.grid_sample``.

``deform_conv2d(x, offset, weight, bias, stride, padding, dilation, mask)`` has the semantics of
``torchvision.ops.deform_conv2d``:

* ``offset``: N × 2·G·kh·kw × H_out × W_out, for deformable group ``g`` and kernel tap
  ``k = i·kw + j`` the pair ``(dy, dx)`` at channels ``2·(g·kh·kw + k)``, ``+1``;
* ``mask``: N × G·kh·kw × H_out × W_out (channel ``g·kh·kw + k``), multiplied into the samples;
* input channels split into G contiguous groups; tap ``(i, j)`` of output pixel ``(y, x)`` reads
  the input at ``(y·s − p + i·d + dy, x·s − p + j·d + dx)``, bilinearly, with taps outside the
  image contributing 0 (torchvision's rule).

The sampling grid is float32 under autocast. Memory: the sampled columns are
N × C·kh·kw × H_out × W_out (as the compiled im2col implementations).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def deform_conv2d(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                  stride=1, padding=0, dilation=1, mask: torch.Tensor | None = None) -> torch.Tensor:
    n, c, h, w = x.shape
    c_out, c_in_g, kh, kw = weight.shape
    groups = c // c_in_g  # ordinary conv groups
    k = kh * kw
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    h_out, w_out = offset.shape[-2:]
    dg = offset.shape[1] // (2 * k)
    if offset.shape[1] != 2 * dg * k or c % dg:
        raise ValueError(f"deform_conv2d: offset channels {offset.shape[1]} do not fit {k} taps / input channels {c}")
    if mask is not None and mask.shape[1] != dg * k:
        raise ValueError(f"deform_conv2d: mask has {mask.shape[1]} channels, expected {dg * k}")
    dev = x.device
    with torch.autocast(device_type=dev.type, enabled=False):
        off = offset.float().reshape(n, dg, k, 2, h_out, w_out)
        ki = torch.arange(kh, device=dev, dtype=torch.float32).repeat_interleave(kw) * dh - ph  # k
        kj = torch.arange(kw, device=dev, dtype=torch.float32).repeat(kh) * dw - pw
        ys = torch.arange(h_out, device=dev, dtype=torch.float32) * sh
        xs = torch.arange(w_out, device=dev, dtype=torch.float32) * sw
        py = ys.view(1, 1, 1, h_out, 1) + ki.view(1, 1, k, 1, 1) + off[:, :, :, 0]  # n, dg, k, ho, wo
        px = xs.view(1, 1, 1, 1, w_out) + kj.view(1, 1, k, 1, 1) + off[:, :, :, 1]
        grid = torch.stack((2.0 * px / max(w - 1, 1) - 1.0, 2.0 * py / max(h - 1, 1) - 1.0), dim=-1)
        grid = grid.reshape(n * dg, k * h_out, w_out, 2)
        xg = x.float().reshape(n * dg, c // dg, h, w)
        cols = F.grid_sample(xg, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        cols = cols.reshape(n, dg, c // dg, k, h_out, w_out)
        if mask is not None:
            cols = cols * mask.float().reshape(n, dg, 1, k, h_out, w_out)
        # (n, c, k, ho*wo) grouped by conv groups → weight (c_out, c_in_g*k)
        cols = cols.reshape(n, groups, c_in_g * k, h_out * w_out)
        wmat = weight.float().reshape(groups, c_out // groups, c_in_g * k)
        out = torch.einsum("gok,ngkp->ngop", wmat, cols).reshape(n, c_out, h_out, w_out)
        if bias is not None:
            out = out + bias.float().view(1, -1, 1, 1)
    return out.to(x.dtype)


class ModulatedDeformConv2d(nn.Module):
    """Parameter container of BasicSR's ``ModulatedDeformConvPack`` (``weight``, ``bias``) with
    the pure-torch ``deform_conv2d``; subclasses compute offset and mask."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, stride=1, padding=0, dilation=1,
                 groups: int = 1, deformable_groups: int = 1, bias: bool = True):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride, self.padding, self.dilation = _pair(stride), _pair(padding), _pair(dilation)
        self.groups, self.deformable_groups = groups, deformable_groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        n = in_channels * self.kernel_size[0] * self.kernel_size[1]
        stdv = 1.0 / n ** 0.5
        nn.init.uniform_(self.weight, -stdv, stdv)

    def deform(self, x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return deform_conv2d(x, offset, self.weight, self.bias, self.stride, self.padding, self.dilation, mask)
