"""Image losses by name: ``train.losses: [{type: L1, weight: 1.0}, {type: PSNR, weight: 0.5}]``.

Each loss is an ``nn.Module`` whose constructor keywords are its YAML keys (``weight`` is
common to all) and whose ``forward(pred, target)`` returns the weighted scalar. Losses are
computed in float32 (also under mixed precision) and never clamp their inputs (DESIGN.md).
Looked up in ``LOSSES`` by name, never evaluated from strings.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from utils.errors import ConfigError, RegistryError
from utils.registry import check_keywords, keyword_names, unknown_name_message


class WeightedLoss(nn.Module):
    """Base: ``weight * loss(pred, target)`` with both cast to float32."""

    def __init__(self, weight: float = 1.0):
        super().__init__()
        if not isinstance(weight, (int, float)) or isinstance(weight, bool):
            raise ConfigError(f"loss weight must be a number, got {weight!r}")
        self.weight = float(weight)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if pred.shape != target.shape:
            raise ValueError(f"{type(self).__name__}: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
        return self.weight * self.compute(pred.float(), target.float())

    def compute(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class L1Loss(WeightedLoss):
    """Mean absolute error."""

    def compute(self, pred, target):
        return (pred - target).abs().mean()


class MSELoss(WeightedLoss):
    """Mean squared error."""

    def compute(self, pred, target):
        return (pred - target).square().mean()


class CharbonnierLoss(WeightedLoss):
    """mean(sqrt((pred - target)^2 + eps^2)), a smooth L1 (Charbonnier et al. 1994; eps = 1e-3 as in
    Lai et al., LapSRN, CVPR 2017 and Zamir et al., MPRNet, CVPR 2021)."""

    def __init__(self, weight: float = 1.0, eps: float = 1e-3):
        super().__init__(weight)
        if not eps > 0:
            raise ConfigError(f"Charbonnier eps must be > 0, got {eps}")
        self.eps = float(eps)

    def compute(self, pred, target):
        return torch.sqrt((pred - target).square() + self.eps**2).mean()


class PSNRLoss(WeightedLoss):
    """Negative PSNR (data range 1), averaged over the batch: mean_b 10·log10(MSE_b + 1e-8)
    (Chen et al., HINet, CVPRW 2021; the loss NAFNet trains with, Chu/Chen et al., ECCV 2022)."""

    scale = 10.0 / math.log(10.0)

    def compute(self, pred, target):
        mse = (pred - target).square().flatten(1).mean(dim=1)
        return self.scale * torch.log(mse + 1e-8).mean()


class FFTLoss(WeightedLoss):
    """L1 distance between the 2-D real FFTs (real and imaginary parts) of prediction and target,
    the frequency loss of MIMO-UNet (Cho et al., ICCV 2021, eq. 6)."""

    def compute(self, pred, target):
        diff = torch.fft.rfft2(pred, norm="backward") - torch.fft.rfft2(target, norm="backward")
        return torch.view_as_real(diff).abs().mean()


LOSSES: dict[str, type[WeightedLoss]] = {
    "L1": L1Loss,
    "MSE": MSELoss,
    "Charbonnier": CharbonnierLoss,
    "PSNR": PSNRLoss,
    "FFT": FFTLoss,
}


def loss_names() -> list[str]:
    return sorted(LOSSES)


def _loss_class(name) -> type[WeightedLoss]:
    if name not in LOSSES:
        raise RegistryError(unknown_name_message("loss", str(name), list(LOSSES)))
    return LOSSES[name]


def check_loss_options(opt: Mapping, prefix: str = "loss") -> None:
    """ConfigError for a missing ``type`` or a keyword the loss does not take."""
    if "type" not in opt:
        raise ConfigError(f"{prefix}.type is required (one of: {', '.join(loss_names())})")
    loss_cls = _loss_class(opt["type"])
    check_keywords(opt, keyword_names(loss_cls.__init__), prefix, f"loss {opt['type']}")


def build_loss(opt: Mapping) -> WeightedLoss:
    """``{"type": "Charbonnier", "weight": 1.0, "eps": 1e-3}`` -> a loss module."""
    opt = dict(opt)
    check_loss_options(opt)
    return _loss_class(opt.pop("type"))(**opt)
