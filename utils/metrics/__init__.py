"""Image quality metrics with documented conventions (see docs/metrics.md).

Per-image metrics on float RGB images in [0, 1]:

* ``psnr``, ``ssim`` (torch, batched B×C×H×W -> Tensor[B]) and their numpy twins ``psnr_np``,
  ``ssim_np`` (one H×W×C image -> float), BasicSR convention; ``ssim(..., mode="3d")`` is the
  MATLAB / NAFNet 3-D SSIM; ``l1`` / ``l1_np`` the mean absolute error on [0, 1].
* ``masked_metrics``: PSNR, SSIM and L1 over a region given by a mask (``utils.metrics.masked``).
* ``compute_metrics(pred, gt, names=("psnr", "ssim"), ...)``: the single entry point for
  training validation and ``calculate_metrics.py``; ``METRICS`` / ``get_metric(name)`` hold the
  registry with "higher is better" flags.
* ``utils.metrics.lpips``: LPIPS (AlexNet, VGG16) in pure torch with the published weights.
* ``utils.metrics.fid``: FID and KID with a pure-torch Inception-v3 (pytorch-fid variant).
"""
from utils.metrics.common import DATA_RANGE, MetricInputError
from utils.metrics.compute import (
    METRICS,
    MetricSpec,
    compute_metrics,
    get_metric,
    higher_is_better,
    metric_names,
    parse_metric_names,
)
from utils.metrics.masked import MASKED_METRICS, masked_metrics
from utils.metrics.psnr_ssim import l1, l1_np, psnr, psnr_np, rgb_to_y, rgb_to_y_np, ssim, ssim_np

__all__ = [
    "DATA_RANGE",
    "MASKED_METRICS",
    "METRICS",
    "MetricInputError",
    "MetricSpec",
    "compute_metrics",
    "get_metric",
    "higher_is_better",
    "l1",
    "l1_np",
    "masked_metrics",
    "metric_names",
    "parse_metric_names",
    "psnr",
    "psnr_np",
    "rgb_to_y",
    "rgb_to_y_np",
    "ssim",
    "ssim_np",
]
