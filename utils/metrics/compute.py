"""Metric registry and the one entry point the trainer and ``calculate_metrics.py`` share.

``compute_metrics(pred, gt, names=("psnr", "ssim"))`` scores a batch of float B×C×H×W images in
[0, 1] and returns one float64 value per image and metric. Clamping to [0, 1] and rounding to
8-bit levels happen inside (``round_to_uint8=True`` by default), so validation numbers equal the
numbers ``calculate_metrics.py`` computes on the PNGs written from the same outputs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch

from utils.errors import RegistryError
from utils.metrics.common import MetricInputError, check_crop_border
from utils.metrics.psnr_ssim import l1, psnr, ssim, to_levels
from utils.registry import unknown_name_message


@dataclass(frozen=True)
class MetricSpec:
    """A registered metric: its name, direction and one-line convention."""

    name: str
    higher_is_better: bool
    unit: str
    convention: str
    per_image: bool = True  # False: a distribution metric over whole image sets (FID, KID)


def _psnr(pred, gt, crop_border, test_y_channel, round_to_uint8, **_):
    return psnr(pred, gt, crop_border, test_y_channel, round_to_uint8)


def _ssim(pred, gt, crop_border, test_y_channel, round_to_uint8, **_):
    return ssim(pred, gt, crop_border, test_y_channel, round_to_uint8, mode="2d")


def _ssim_3d(pred, gt, crop_border, test_y_channel, round_to_uint8, **_):
    return ssim(pred, gt, crop_border, test_y_channel, round_to_uint8, mode="3d")


def _l1(pred, gt, crop_border, test_y_channel, round_to_uint8, **_):
    return l1(pred, gt, crop_border, test_y_channel, round_to_uint8)


def _lpips_with(net: str):
    def fn(pred, gt, crop_border, test_y_channel, round_to_uint8, lpips_weights=None, **_):
        from utils.metrics.lpips import get_lpips

        check_crop_border(crop_border)
        # Score what a saved image holds: clamp, optional 8-bit rounding, back to [0, 1].
        pred = to_levels(pred, round_to_uint8).float() / 255.0
        gt = to_levels(gt, round_to_uint8).float() / 255.0
        if crop_border:
            pred = pred[..., crop_border:-crop_border, crop_border:-crop_border]
            gt = gt[..., crop_border:-crop_border, crop_border:-crop_border]
        model = get_lpips(net, weights=lpips_weights, device=pred.device)
        with torch.no_grad():
            return model(pred, gt).to(torch.float64)

    return fn


METRICS: dict[str, MetricSpec] = {
    "psnr": MetricSpec(
        "psnr", True, "dB",
        "10·log10(255²/MSE) on 8-bit levels, MSE over pixels and channels (BasicSR calculate_psnr)",
    ),
    "ssim": MetricSpec(
        "ssim", True, "",
        "Gaussian 11×11 σ1.5, valid region, per channel then mean, C1=(0.01·255)², C2=(0.03·255)² (BasicSR calculate_ssim)",
    ),
    "ssim_3d": MetricSpec(
        "ssim_3d", True, "",
        "3-D Gaussian 11×11×11 σ1.5 over H×W×C, replicate padding, full map (MATLAB ssim() on RGB, NAFNet ssim3d)",
    ),
    "l1": MetricSpec(
        "l1", False, "",
        "mean |pred − gt| of the 8-bit levels over pixels and channels, divided by 255 ([0, 1] scale)",
    ),
    "lpips": MetricSpec(
        "lpips", False, "",
        "LPIPS v0.1, AlexNet features + learned linear layers, inputs [0,1] mapped to [-1,1] (Zhang et al., CVPR 2018)",
    ),
    "lpips_vgg": MetricSpec(
        "lpips_vgg", False, "",
        "LPIPS v0.1, VGG16 features + learned linear layers, inputs [0,1] mapped to [-1,1] (Zhang et al., CVPR 2018)",
    ),
    "fid": MetricSpec(
        "fid", False, "",
        "Fréchet distance of pytorch-fid Inception-v3 pool3 features (Heusel et al., NeurIPS 2017)",
        per_image=False,
    ),
    "kid": MetricSpec(
        "kid", False, "",
        "unbiased MMD², cubic polynomial kernel on Inception pool3 features (Bińkowski et al., ICLR 2018)",
        per_image=False,
    ),
}

_PER_IMAGE_FNS: dict[str, Callable[..., torch.Tensor]] = {
    "psnr": _psnr,
    "ssim": _ssim,
    "ssim_3d": _ssim_3d,
    "l1": _l1,
    "lpips": _lpips_with("alex"),
    "lpips_vgg": _lpips_with("vgg"),
}


def metric_names(per_image: bool | None = None) -> list[str]:
    """Registered metric names (optionally only per-image or only distribution metrics)."""
    return [n for n, s in METRICS.items() if per_image is None or s.per_image == per_image]


def get_metric(name: str) -> MetricSpec:
    """The spec of a metric; an unknown name raises RegistryError with the closest match."""
    key = name.strip().lower().replace("-", "_")
    if key not in METRICS:
        raise RegistryError(unknown_name_message("metric", name, list(METRICS)))
    return METRICS[key]


def higher_is_better(name: str) -> bool:
    return get_metric(name).higher_is_better


def parse_metric_names(names: str | Iterable[str]) -> list[str]:
    """"psnr, ssim" or ["psnr", "ssim"] -> validated canonical names, order kept, no duplicates."""
    items = names.split(",") if isinstance(names, str) else list(names)
    out: list[str] = []
    for item in items:
        if not str(item).strip():
            continue
        name = get_metric(str(item)).name
        if name not in out:
            out.append(name)
    if not out:
        raise MetricInputError("no metric names given")
    return out


def compute_metrics(
    pred: torch.Tensor,
    gt: torch.Tensor,
    names: Sequence[str] | str = ("psnr", "ssim"),
    crop_border: int = 0,
    test_y_channel: bool = False,
    round_to_uint8: bool = True,
    lpips_weights: str | None = None,
) -> dict[str, torch.Tensor]:
    """Per-image metrics of a batch: {name: Tensor[B] float64 on the input device}.

    ``pred``/``gt``: float B×C×H×W RGB in [0, 1] (values outside are clamped, as when saving).
    ``round_to_uint8`` (default True) scores the 8-bit levels a saved PNG would hold.
    ``crop_border`` applies to every metric; ``test_y_channel`` to PSNR/SSIM only (LPIPS is RGB).
    Distribution metrics (fid, kid) need whole image sets: use ``utils.metrics.fid``.
    """
    result: dict[str, torch.Tensor] = {}
    for name in parse_metric_names(names):
        if not METRICS[name].per_image:
            raise MetricInputError(
                f"'{name}' compares whole image sets, not image pairs: use utils.metrics.fid "
                f"(or calculate_metrics.py --metrics {name})"
            )
        result[name] = _PER_IMAGE_FNS[name](
            pred, gt, crop_border=crop_border, test_y_channel=test_y_channel,
            round_to_uint8=round_to_uint8, lpips_weights=lpips_weights,
        )
    return result
