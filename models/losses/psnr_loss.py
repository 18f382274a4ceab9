"""Negative PSNR."""
from __future__ import annotations

import math

import torch

from models.losses.base import WeightedLoss


class PSNRLoss(WeightedLoss):
    """Negative PSNR (data range 1), averaged over the batch: mean_b 10·log10(MSE_b + 1e-8)
    (Chen et al., HINet, CVPRW 2021; the loss NAFNet trains with, Chu/Chen et al., ECCV 2022)."""

    scale = 10.0 / math.log(10.0)

    def compute(self, pred, target):
        mse = (pred - target).square().flatten(1).mean(dim=1)
        return self.scale * torch.log(mse + 1e-8).mean()
