"""PSNR, SSIM and L1 restricted to a region of the image (inpainting holes, known pixels, ...).

The mask is B×1×H×W with 1 = scored pixel (values > 0.5 count as 1). Everything else follows the
BasicSR convention of ``utils.metrics.psnr_ssim`` (8-bit levels, crop, Y channel, float64):

* the mask is cropped by ``crop_border`` exactly as the images are;
* PSNR = 10·log10(255² / MSE) with MSE = the mean of (pred − gt)² over the masked pixels and
  all channels (sum over masked pixels and channels / (masked pixels × channels));
* L1 = the mean of |pred − gt| over the masked pixels and all channels, divided by 255;
* SSIM (``mode="2d"``) = per channel, the mean of the SSIM map (11×11 Gaussian, σ 1.5, 'valid'
  region) over the map positions whose window is centred on a masked pixel, then the mean over
  channels. The map position (i, j) is the window centred at pixel (i + 5, j + 5), so a mask
  pixel within 5 pixels of the (cropped) border has no map value and is left out; the windows of
  pixels near the mask's edge also see unmasked pixels, as in a whole-image SSIM;
* SSIM (``mode="3d"``) = the mean of the full-size 3-D SSIM map (replicate padding) over the
  masked pixels of every channel.

A mask with no scored pixel (after the crop) is an error, never a NaN or a silent 0.
With an all-ones mask the values equal the unmasked metrics (up to float summation order).
"""
from __future__ import annotations

import torch

from utils.metrics.common import DATA_RANGE, SSIM_WINDOW, MetricInputError, check_crop_border
from utils.metrics.psnr_ssim import _check_mode, _filter_replicate_3d, _filter_valid_2d, _prepare, _ssim_map, gaussian_window

MASKED_METRICS = ("psnr", "ssim", "ssim_3d", "l1")


def _mask(mask: torch.Tensor, like: torch.Tensor, crop_border: int, what: str) -> torch.Tensor:
    """B×1×H×W float64 0/1 mask, cropped like the images."""
    if not isinstance(mask, torch.Tensor) or mask.ndim != 4 or mask.shape[1] != 1 or \
            mask.shape[0] != like.shape[0] or mask.shape[2:] != like.shape[2:]:
        raise MetricInputError(f"{what}: the mask must be B×1×H×W matching the images {tuple(like.shape)}, "
                               f"got {tuple(getattr(mask, 'shape', ()))}")
    m = (mask.detach().to(torch.float64) > 0.5).to(torch.float64)
    check_crop_border(crop_border)
    if crop_border:
        m = m[..., crop_border:-crop_border, crop_border:-crop_border]
    return m


def _count(m: torch.Tensor, what: str) -> torch.Tensor:
    n = m.sum(dim=(1, 2, 3))
    if bool((n == 0).any()):
        raise MetricInputError(f"{what}: the mask holds no scored pixel (after crop_border)")
    return n


def masked_psnr(pred, gt, mask, crop_border=0, test_y_channel=False, round_to_uint8=False) -> torch.Tensor:
    """PSNR over the masked pixels (module docstring): Tensor[B] float64, +inf if equal there."""
    m = _mask(mask, pred, crop_border, "PSNR")
    p, g = _prepare(pred, gt, crop_border, test_y_channel, round_to_uint8, 1, "PSNR")
    n = _count(m, "PSNR") * p.shape[1]
    mse = (((p - g) ** 2) * m).sum(dim=(1, 2, 3)) / n
    return 10.0 * torch.log10(DATA_RANGE * DATA_RANGE / mse)


def masked_l1(pred, gt, mask, crop_border=0, test_y_channel=False, round_to_uint8=False) -> torch.Tensor:
    """Mean |pred − gt| over the masked pixels on the [0, 1] scale: Tensor[B] float64."""
    m = _mask(mask, pred, crop_border, "L1")
    p, g = _prepare(pred, gt, crop_border, test_y_channel, round_to_uint8, 1, "L1")
    n = _count(m, "L1") * p.shape[1]
    return ((p - g).abs() * m).sum(dim=(1, 2, 3)) / n / DATA_RANGE


def masked_ssim(pred, gt, mask, crop_border=0, test_y_channel=False, round_to_uint8=False, mode="2d") -> torch.Tensor:
    """SSIM averaged over the masked pixels (module docstring): Tensor[B] float64."""
    _check_mode(mode)
    m = _mask(mask, pred, crop_border, "SSIM")
    p, g = _prepare(pred, gt, crop_border, test_y_channel, round_to_uint8, SSIM_WINDOW if mode == "2d" else 1, "SSIM")
    win = gaussian_window().tolist()
    if mode == "2d":
        r = SSIM_WINDOW // 2
        centres = m[..., r:-r, r:-r]                       # map position (i, j) <-> pixel (i + r, j + r)
        n = _count(centres, "SSIM")
        smap = _ssim_map(*[_filter_valid_2d(t, win) for t in (p, g, p * p, g * g, p * g)])  # B×C×h×w
        return ((smap * centres).sum(dim=(2, 3)) / n[:, None]).mean(dim=1)
    n = _count(m, "SSIM") * p.shape[1]
    p, g = p.unsqueeze(1), g.unsqueeze(1)
    smap = _ssim_map(*[_filter_replicate_3d(t, win) for t in (p, g, p * p, g * g, p * g)])  # B×1×C×H×W
    return (smap * m.unsqueeze(1)).sum(dim=(1, 2, 3, 4)) / n


def masked_metrics(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, names=("psnr", "ssim"),
                   crop_border: int = 0, test_y_channel: bool = False,
                   round_to_uint8: bool = True) -> dict[str, torch.Tensor]:
    """{name: Tensor[B] float64} over the masked region, for ``names`` ⊆ MASKED_METRICS."""
    from utils.metrics.compute import parse_metric_names

    kw = dict(crop_border=crop_border, test_y_channel=test_y_channel, round_to_uint8=round_to_uint8)
    out = {}
    for name in parse_metric_names(names):
        if name not in MASKED_METRICS:
            raise MetricInputError(f"metric '{name}' cannot be restricted to a mask (masked metrics: "
                                   f"{', '.join(MASKED_METRICS)})")
        if name == "psnr":
            out[name] = masked_psnr(pred, gt, mask, **kw)
        elif name == "l1":
            out[name] = masked_l1(pred, gt, mask, **kw)
        else:
            out[name] = masked_ssim(pred, gt, mask, mode="3d" if name == "ssim_3d" else "2d", **kw)
    return out
