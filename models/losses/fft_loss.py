"""Frequency-domain L1."""
from __future__ import annotations

import torch

from models.losses.base import WeightedLoss


class FFTLoss(WeightedLoss):
    """L1 distance between the 2-D real FFTs (real and imaginary parts) of prediction and target,
    the frequency loss of MIMO-UNet (Cho et al., ICCV 2021, eq. 6)."""

    def compute(self, pred, target):
        diff = torch.fft.rfft2(pred, norm="backward") - torch.fft.rfft2(target, norm="backward")
        return torch.view_as_real(diff).abs().mean()
