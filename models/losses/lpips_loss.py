"""LPIPS as a training loss: the metric's network (utils/metrics/lpips.py) with its published
weights, frozen."""
from __future__ import annotations

import torch

from models.losses.base import WeightedLoss
from utils.errors import ConfigError


class LPIPSLoss(WeightedLoss):
    """Mean over the batch of the LPIPS distance d(pred, target) (Zhang et al., CVPR 2018; as the
    perceptual term of e.g. Rombach et al., LDM, CVPR 2022), differentiable with respect to
    ``pred``. Inputs B×3×H×W in [0, 1] (H, W >= 32), not clamped.

    ``net``: ``alex`` (default, the metric's default) or ``vgg``; ``weights``: an explicit weights
    file (or comma-separated files) as for the metric, else they are found as the metric finds
    them. The network is frozen and deliberately not a submodule: the loss has no parameters, so
    none can reach an optimiser, a ``state_dict``/checkpoint, DDP or ``.train()``; it follows the
    prediction's device on first use.
    """

    def __init__(self, weight: float = 1.0, net: str = "alex", weights: str | None = None):
        super().__init__(weight)
        from utils.metrics.common import MetricInputError
        from utils.metrics.lpips import canonical_net, load_lpips

        try:
            self.network = canonical_net(net)
        except MetricInputError as exc:
            raise ConfigError(f"LPIPS loss: {exc}") from None
        self.__dict__["_lpips"] = load_lpips(self.network, weights).eval().requires_grad_(False)

    @property
    def lpips(self) -> torch.nn.Module:
        """The frozen LPIPS network (on the device of the last prediction)."""
        return self.__dict__["_lpips"]

    def compute(self, pred, target):
        if self.lpips.shift.device != pred.device:
            self.__dict__["_lpips"] = self.lpips.to(pred.device)
        return self.lpips(pred, target, normalize=True).mean()
