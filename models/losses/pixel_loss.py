"""Per-pixel distances: L1, MSE, Charbonnier."""
from __future__ import annotations

import torch

from models.losses.base import WeightedLoss
from utils.errors import ConfigError


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
