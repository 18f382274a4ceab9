"""Base classes of the losses (not registered: this file does not match ``*_loss.py``)."""
from __future__ import annotations

import torch
from torch import nn

from utils.errors import ConfigError


class Loss(nn.Module):
    """Every loss: an ``nn.Module`` with a config ``weight`` (a number) that scales its output."""

    def __init__(self, weight: float = 1.0):
        super().__init__()
        if not isinstance(weight, (int, float)) or isinstance(weight, bool):
            raise ConfigError(f"loss weight must be a number, got {weight!r}")
        self.weight = float(weight)


class WeightedLoss(Loss):
    """A pixel loss: ``forward(pred, target) = weight * compute(pred, target)`` with both cast to
    float32 (and autocast off, so mixed precision never lowers the loss's precision)."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if pred.shape != target.shape:
            raise ValueError(f"{type(self).__name__}: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
        with torch.autocast(pred.device.type, enabled=False):
            return self.weight * self.compute(pred.float(), target.float())

    def compute(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
